"""The module functions: :func:`generate`, :func:`agenerate`, :func:`generate_many`,
:func:`agenerate_many`, :func:`usage_limits`, :func:`ausage_limits`. Each is a throwaway
:class:`~codex_cli_image.Client` (as ``httpx.get`` is a throwaway ``httpx.Client``): for many
images, keep one client.

They take what a client takes (the keywords of :class:`~codex_cli_image.settings.Settings`)
beside what they make: the per-image keywords of :class:`~codex_cli_image.ImageRequest` for one
image, or the requests and their batch options.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from .batch import (
    BatchOutcome,
    BatchProgressCallback,
    OutcomeCallback,
    RequestLike,
    coerce_requests,
)
from .client import Client
from .request import IMAGE_FIELDS, ImageRequest
from .results import ImageResult, ProgressCallback
from .settings import SETTING_NAMES, Settings
from .usage import UsageLimits

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .settings import ClientOptions, GenerateOptions

__all__ = [
    "ImageResult",
    "agenerate",
    "agenerate_many",
    "ausage_limits",
    "generate",
    "generate_many",
    "usage_limits",
]


async def ausage_limits(**options: Unpack[ClientOptions]) -> UsageLimits:
    """The subscription's usage windows now, without spending an image: see
    :meth:`Client.ausage_limits <codex_cli_image.Client.ausage_limits>`. Takes the client's
    settings (codex, codex_home, profile, allow_relay, env, timeout)."""
    settings = Settings.from_options(options, "ausage_limits")
    async with Client(settings) as client:
        return await client.ausage_limits(
            timeout=settings.timeout if "timeout" in options else None
        )


def usage_limits(**options: Unpack[ClientOptions]) -> UsageLimits:
    """The blocking twin of :func:`ausage_limits`."""
    settings = Settings.from_options(options, "usage_limits")
    with Client(settings) as client:
        return client.usage_limits(timeout=settings.timeout if "timeout" in options else None)


async def agenerate(
    prompt: str, *, on_progress: ProgressCallback | None = None, **options: Unpack[GenerateOptions]
) -> ImageResult:
    """Make one image with the signed-in Codex CLI and deliver it as a verified PNG.

    prompt: what to draw. The per-image keywords are those of
    :class:`~codex_cli_image.ImageRequest`: output (a .png path or a directory, default the
    current one; never overwritten unless ``overwrite``), references (up to 5 PNG, JPEG, GIF or
    WebP images to start from), aspect (``square``, ``landscape``, ``portrait`` or ``W:H``),
    size (``WxH``) and transparent (asked of the model; the result reports what was delivered),
    fit (``WxH``, needs Pillow: also writes an exact-size copy beside the image). The others
    are the client's settings (:class:`~codex_cli_image.settings.Settings`): codex, codex_home,
    profile, model, allow_relay, env, timeout (seconds for the whole call, retries included),
    retries, wait_for_turn, keep_codex_copy. on_progress: called with each :class:`Progress`.

    Raises :class:`~codex_cli_image.CodexImageError` (input, launch, auth, quota, transient).
    """
    request, settings = _split("agenerate", prompt, options)
    async with Client(settings) as client:
        return await client.agenerate(request, on_progress=on_progress)


def generate(
    prompt: str, *, on_progress: ProgressCallback | None = None, **options: Unpack[GenerateOptions]
) -> ImageResult:
    """The blocking twin of :func:`agenerate`: same arguments, same result, same errors.

    Runs on its own event loop, so it is safe from any thread, including one that already runs
    an event loop. Ctrl-C cancels the run and ends codex's process tree before
    ``KeyboardInterrupt`` propagates. ``on_progress`` is called from the thread that runs the
    loop (this one, or a worker thread).
    """
    request, settings = _split("generate", prompt, options)
    with Client(settings) as client:
        return client.generate(request, on_progress=on_progress)


@asynccontextmanager
async def agenerate_many(
    requests: Iterable[RequestLike],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    on_progress: BatchProgressCallback | None = None,
    lines: Sequence[int] | None = None,
    **options: Unpack[ClientOptions],
) -> AsyncIterator[AsyncIterator[BatchOutcome]]:
    """Run a batch; yields an iterator of :class:`BatchOutcome` in the order jobs finish.

    ::

        async with agenerate_many(["a fox", "a hen"], out_dir="out") as outcomes:
            async for outcome in outcomes:
                print(outcome.index, outcome.status, outcome.result or outcome.error)

    Every outcome comes out, one per request (not-started ones included). Leaving the block
    early, or cancelling, stops every running job and ends its codex process tree. requests:
    prompts, mappings (the JSON Lines fields) or :class:`~codex_cli_image.ImageRequest`.
    out_dir: where images without an output go, and what relative outputs are relative to
    (created if missing). overwrite: for every job (a request may also set its own).
    on_progress: called with the job's index and its :class:`Progress`. lines: the requests'
    line numbers in a batch file, for messages and outcomes. The other keywords are the
    client's settings, as for :func:`agenerate` (timeout is per job), and concurrency: jobs at
    once (default 2).

    A usage limit, exhausted credits or a plan without Codex stops new jobs (the rest are
    ``not_started``, with the error's ``retry_at``); a rate limit (429) pauses new starts for
    its ``retry_after_s`` (10 s when unknown, at most 2 min). Raises :class:`InputError` before
    any job starts when a request, one of its files or an argument is invalid.
    """
    jobs = coerce_requests(requests)
    settings = Settings.from_options(options, "agenerate_many")
    async with Client(settings) as client, client.agenerate_many(
        jobs, out_dir=out_dir, overwrite=overwrite, on_progress=on_progress, lines=lines
    ) as outcomes:  # fmt: skip
        yield outcomes


def generate_many(
    requests: Iterable[RequestLike],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    on_progress: BatchProgressCallback | None = None,
    on_outcome: OutcomeCallback | None = None,
    lines: Sequence[int] | None = None,
    **options: Unpack[ClientOptions],
) -> list[BatchOutcome]:
    """The blocking twin of :func:`agenerate_many`: every outcome, in request order.

    ``on_outcome`` is called as each job finishes, on the batch's event loop thread (keep it
    quick); an exception from it stops the batch, ends every running job and propagates.
    Ctrl-C stops every job and ends every codex process tree before ``KeyboardInterrupt``
    propagates.
    """
    jobs = coerce_requests(requests)  # bad input raises before a worker thread and a loop start
    settings = Settings.from_options(options, "generate_many")
    with Client(settings) as client:
        return client.generate_many(
            jobs, out_dir=out_dir, overwrite=overwrite, on_progress=on_progress,
            on_outcome=on_outcome, lines=lines,
        )  # fmt: skip


def _split(caller: str, prompt: str, options: Mapping[str, Any]) -> tuple[ImageRequest, Settings]:
    """The per-image keywords (a request) and the client's (settings), apart."""
    image = {k: v for k, v in options.items() if k in IMAGE_FIELDS}
    settings = {k: v for k, v in options.items() if k in SETTING_NAMES - {"concurrency"}}
    unknown = sorted(set(options) - set(image) - set(settings))
    if unknown:  # concurrency too: one image needs no limit
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    return ImageRequest(prompt, **image), Settings(**settings)
