"""One image: plan it (everything checked before any work), run attempts, deliver, report.

The pipeline knows nothing of clients: what the preflight establishes (codex, its version, the
login) comes through a :class:`Preflight`, and the settings as a value. Everything a caller got
wrong is found by :func:`plan_image` before quota is spent: the request, its references (read
once; codex later gets exactly those bytes), the output, Pillow for ``fit``.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import anyio

from ._tasks import beside
from .endpoint import resend_warnings
from .errors import InputError, TransientError, retry_rule
from .fit import fit_png, require_pillow
from .launcher import Codex, CodexVersion
from .output import Target, plan_output, write_atomically
from .png import inspect_png
from .preflight import Verdict
from .prompt import build_instruction
from .request import (
    Geometry,
    ImageRequest,
    Reference,
    check_references,
    compare_geometry,
    parse_aspect,
    parse_size,
    reference_names,
)
from .results import FittedImage, ImageResult, Phase, Progress, ProgressCallback
from .runner import Attempt, Produced, remove_codex_copy, run_attempt
from .settings import Settings

__all__ = ["Plan", "Preflight", "Ready", "Reporter", "make_image", "plan_image"]

log = logging.getLogger(__name__)

_BACKOFF_S = 2.0
HEARTBEAT_S = 5.0
"""The longest silence of ``on_progress`` while an image is made (a ``working`` progress)."""


@dataclass(frozen=True, slots=True)
class Ready:
    """What the preflight established for one image: codex, its version, its home, the login."""

    codex: Codex
    version: CodexVersion
    home: Path
    verdict: Verdict
    disable: tuple[str, ...] = ()
    """Features to ``--disable``: the model's other tools, and start-up work an image does not
    need (:func:`~codex_cli_image.lockdown.features_to_disable`)."""
    yield_setting: bool = False
    """Whether this codex takes :data:`~codex_cli_image.launcher.YIELD_SETTING`."""


class Preflight(Protocol):
    """Given the call's deadline (``time.monotonic()``), the checked codex and login."""

    async def __call__(self, deadline: float) -> Ready: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """One image, checked: what to ask for, with which references, and where it goes."""

    request: ImageRequest
    target: Target
    geometry: Geometry
    references: tuple[Reference, ...]
    fit_size: tuple[int, int] | None = None

    @property
    def writes(self) -> tuple[Path, ...]:
        """The files this image is written to by their given names: the caller's output and
        its ``fit`` copy (a name made from the prompt moves to the next free one instead)."""
        if self.target.named_by_us:
            return ()
        path = self.target.path
        return (path,) if self.fit_size is None else (path, fit_path(path, self.fit_size))

    @property
    def instruction(self) -> str:
        names = reference_names(self.references)
        return build_instruction(self.request.prompt, self.geometry, names)


def plan_image(request: ImageRequest, *, where: str | None = None) -> Plan:
    """Check ``request`` and everything it names; blocking (it reads the references and looks at
    the output), so async code runs it in a worker thread. ``where`` (``"line 3"``) starts the
    message of the :class:`InputError` raised for anything wrong, OS errors from the caller's
    paths included."""
    try:
        request.check()
        fit_size = parse_size(request.fit) if request.fit else None
        if fit_size is not None:
            require_pillow()
        aspect = request.aspect
        if fit_size is not None and not (aspect or request.size):
            aspect = f"{fit_size[0]}:{fit_size[1]}"  # little to crop
        geometry = Geometry(
            aspect=parse_aspect(aspect) if aspect else None,
            size=parse_size(request.size) if request.size else None,
            transparent=request.transparent,
        )
        references = tuple(check_references(list(request.references)))
        try:
            target = plan_output(request.output, request.prompt, overwrite=request.overwrite)
        except OSError as exc:  # e.g. a folder above it that we may not search
            raise InputError(
                f"The output {exc.filename or request.output or 'folder'} cannot be used: "
                f"{exc.strerror or type(exc).__name__}.",
                reason="output_unusable",
                hint="Choose an output in a folder you can enter and write to.",
            ) from None
    except InputError as error:
        raise error.at(where) from None
    return Plan(request, target, geometry, references, fit_size)


class Reporter:
    """``on_progress`` made safe: elapsed time from the call's start, and a broken callback
    logged instead of breaking the run or its clean-up."""

    def __init__(self, callback: ProgressCallback | None, started: float | None = None) -> None:
        self.callback = callback
        self.started = time.monotonic() if started is None else started
        self._sent_at = self.started
        self._attempt = 1
        self._thread_id: str | None = None

    def __call__(
        self, phase: Phase, message: str | None = None, thread_id: str | None = None,
        attempt: int = 1,
    ) -> None:  # fmt: skip
        if self.callback is None:
            return
        now = time.monotonic()
        self._sent_at, self._attempt = now, attempt
        self._thread_id = thread_id or self._thread_id
        try:
            self.callback(Progress(phase, now - self.started, attempt, message, thread_id))
        except Exception:
            log.exception("on_progress callback failed")

    async def heartbeat(self, _: anyio.CancelScope) -> None:
        """A ``working`` progress whenever nothing was reported for ``HEARTBEAT_S``: codex says
        nothing for most of an image's 20-120 s, and a caller must tell slow from hung."""
        while self.callback is not None:
            await anyio.sleep(max(0.05, self._sent_at + HEARTBEAT_S - time.monotonic()))
            if time.monotonic() - self._sent_at >= HEARTBEAT_S:
                self("working", "still working", self._thread_id, self._attempt)

    def numbered(self, attempt: int) -> Callable[[Phase, str | None, str | None], None]:
        def forward(phase: Phase, message: str | None, thread_id: str | None) -> None:
            self(phase, message, thread_id, attempt)

        return forward


async def make_image(
    plan: Plan, preflight: Preflight, settings: Settings, report: Reporter
) -> ImageResult:
    """Preflight, run codex (retried after transient failures a retry can help), deliver, and
    report (with a heartbeat in the silences). The timeout counts from ``report.started``."""
    done = await beside(partial(_make_image, plan, preflight, settings, report), report.heartbeat)
    assert done is not None  # the heartbeat never cancels the work
    return done[0]


async def _make_image(
    plan: Plan, preflight: Preflight, settings: Settings, report: Reporter
) -> ImageResult:
    deadline = report.started + settings.timeout
    report("started")
    ready = await preflight(deadline)
    ready.verdict.raise_for_problem()
    produced, attempts = await _attempts(plan, ready, settings, deadline, report)
    # From here on the image is paid for: a close or a cancel waits until it is saved and
    # reported, so that no caller is told "nothing was saved" about an image that was.
    with anyio.CancelScope(shield=True):
        result = await _finish(plan, produced, ready, attempts, settings, report)
    return result


async def _finish(
    plan: Plan,
    produced: Produced,
    ready: Ready,
    attempts: int,
    settings: Settings,
    report: Reporter,
) -> ImageResult:
    """Deliver the image (and its fit copy) and report it."""
    version = str(ready.version)
    path, warnings = await anyio.to_thread.run_sync(_save_image, plan, produced, version)
    # A 20 MB image's hash takes tens of ms: never on the loop a server answers others from.
    digest = await anyio.to_thread.run_sync(lambda: hashlib.sha256(produced.data).hexdigest())
    if produced.codex_file is not None and not settings.keep_codex_copy:
        remove_codex_copy(produced.codex_file)
    fitted = await _fit(plan, produced, path, warnings)
    mismatch, geometry_warnings = compare_geometry(plan.geometry, produced.info)
    result = ImageResult(
        path=path,
        bytes=len(produced.data),
        sha256=digest,
        width=produced.info.width,
        height=produced.info.height,
        format="png",
        thread_id=produced.thread_id,
        codex_version=version,
        elapsed_s=time.monotonic() - report.started,
        usage=produced.usage,
        revised_prompt=produced.revised_prompt,
        attempts=attempts,
        warnings=(
            *(n.message for n in ready.verdict.warnings),
            *geometry_warnings,
            *warnings,
            *resend_warnings(produced.image_requests),
        ),  # fmt: skip
        image_source=produced.source,
        has_alpha=produced.info.has_alpha,
        requested=plan.geometry,
        geometry_mismatch=mismatch,
        fitted=fitted,
        usage_limits=produced.usage_limits,
    )
    report("finished", str(path), produced.thread_id, attempts)
    return result


async def _attempts(
    plan: Plan, ready: Ready, settings: Settings, deadline: float, report: Reporter
) -> tuple[Produced, int]:
    """Run codex until an image is produced, with backoff, within the deadline. Returns the
    image and the number of attempts."""
    version = str(ready.version)
    number = 0
    while True:
        if time.monotonic() >= deadline:
            raise TransientError(
                f"No time was left to run codex within {settings.timeout:g} s.",
                reason="timeout",
                hint="Allow more time (--timeout, timeout=).",
                codex_version=version,
            )
        number += 1
        attempt = Attempt(
            codex=ready.codex,
            codex_home=ready.home,
            instruction=plan.instruction,
            deadline=deadline,
            timeout_s=settings.timeout,
            model=settings.model,
            profile=settings.profile,
            disable=ready.disable,
            yield_setting=ready.yield_setting,
            mcp_servers=ready.verdict.mcp_servers,
            wait_for_turn=settings.wait_for_turn,
            codex_version=version,
            emit=report.numbered(number),
            references=plan.references,
        )
        try:
            produced = await run_attempt(attempt)
            _refuse_copied_reference(produced, plan.references, version)
            return produced, number
        except TransientError as error:
            pause = _BACKOFF_S * 2 ** (number - 1) + random.uniform(0, 1)
            if (
                not retry_rule(error).ours
                or number > settings.retries
                or time.monotonic() + pause >= deadline
            ):
                raise
            report("retrying", f"{error.reason}: {error.message}", error.thread_id, number)
            await anyio.sleep(pause)


def _save_image(plan: Plan, produced: Produced, version: str) -> tuple[Path, list[str]]:
    """The image in its place; an OSError (disk full, folder gone) names codex's copy, kept."""
    try:
        return write_atomically(produced.data, plan.target)
    except OSError as exc:
        kept = f" codex's copy is kept at {produced.codex_file}." if produced.codex_file else ""
        raise InputError(
            f"Could not write the image to {plan.target.path}: {exc.strerror or exc}.{kept}",
            reason="output_write_failed",
            hint=_delivery_hint(exc, kept=produced.codex_file is not None),
            thread_id=produced.thread_id,
            codex_version=version,
        ) from exc


async def _fit(
    plan: Plan, produced: Produced, path: Path, warnings: list[str]
) -> FittedImage | None:
    """The exact-size copy, if asked for; a failure is a warning (the image is paid for)."""
    if plan.fit_size is None:
        return None
    size = plan.fit_size
    try:
        return await anyio.to_thread.run_sync(
            _fit_beside, produced.data, path, size, plan.request.overwrite
        )
    except Exception as exc:  # the image is delivered and paid for: never lose it over this
        log.warning("the fitted copy failed: %s", type(exc).__name__)
        warnings.append(
            f"The {size[0]}x{size[1]} copy could not be made "
            f"({getattr(exc, 'strerror', None) or exc}); the image itself is saved."
        )
        return None


def fit_path(original: Path, size: tuple[int, int]) -> Path:
    """Where the exact-size copy of ``original`` goes: beside it, its size in the name."""
    return original.with_name(f"{original.stem}-{size[0]}x{size[1]}.png")


def _fit_beside(data: bytes, original: Path, size: tuple[int, int], overwrite: bool) -> FittedImage:
    """Write the exact-size copy next to ``original`` (replacing only with ``overwrite``)."""
    fitted = fit_png(data, size)
    path, _ = write_atomically(fitted, Target(fit_path(original, size), overwrite=overwrite,
                                     named_by_us=True))  # fmt: skip
    info = inspect_png(fitted)
    return FittedImage(path, info.width, info.height, len(fitted),
                       hashlib.sha256(fitted).hexdigest())  # fmt: skip


def _delivery_hint(exc: OSError, *, kept: bool) -> str:
    """What to do when the image could not be written: regenerating it is the last resort."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fix = "Free some space on that disk, or choose another output folder"
    elif exc.errno == errno.ENOENT:
        fix = "The output folder was removed while codex worked: recreate it or choose another"
    else:
        fix = "Check the output folder (permissions, space), or choose another"
    if kept:
        return f"{fix}; the image is not lost: copy it from codex's copy named above."
    return f"{fix}, then retry."


def _refuse_copied_reference(
    produced: Produced, references: tuple[Reference, ...], version: str
) -> None:
    """An "edit" that returns a reference unchanged is no new image."""
    digest = hashlib.sha256(produced.data).hexdigest()
    for reference in references:
        if reference.sha256 == digest:
            raise TransientError(
                f"codex returned the reference {reference.source.name} unchanged, not a new image.",
                reason="no_image",
                hint="Retry; describe the change you want more explicitly.",
                thread_id=produced.thread_id,
                codex_version=version,
            )
