"""Many images in one call: ``generate_many`` and ``agenerate_many``.

Each job is one :func:`~codex_cli_image.agenerate` call with its own codex process, thread and
workspace, so a job's image can only come from its own thread. At most ``concurrency`` jobs run at
once (the backend answers 429 when more than 2-3 image streams run). A failing job does not stop
the others, except a quota failure: the jobs not yet started would all fail the same way, so they
are reported as not started, with the quota error's ``retry_at``.

Requests are checked before any job starts (a typo on line 40 must not surface after 39 images
were paid for); the parsing of batch files is pure.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from .api import DEFAULT_TIMEOUT_S, ImageResult
from .client import DEFAULT_CONCURRENCY, Client, _Limit
from .errors import CodexImageError, InputError, QuotaError, TransientError, internal_error
from .fit import require_pillow
from .output import plan_output
from .request import ImageRequest, check_references
from .runner import Progress, ProgressCallback

if TYPE_CHECKING:
    Make = Callable[[ImageRequest, ProgressCallback | None], Awaitable[ImageResult]]

__all__ = [
    "BatchOutcome",
    "BatchRequest",
    "agenerate_many",
    "generate_many",
    "numbered_requests",
    "parse_batch",
]

log = logging.getLogger(__name__)

RATE_LIMIT_PAUSE_S = 10.0  # when a 429 says nothing of when to come back
_MAX_PAUSE_S = 120.0
Status = Literal["ok", "failed", "not_started"]
_FIELDS = ("prompt", "output", "references", "aspect", "size", "transparent", "fit", "overwrite")


BatchRequest = ImageRequest
"""One job of a batch: an :class:`~codex_cli_image.ImageRequest` (the name batches had first)."""
RequestLike = ImageRequest | str | Mapping[str, object]


def request_from_mapping(data: Mapping[str, object], where: str = "request") -> ImageRequest:
    """Build a request from a JSON object, or raise :class:`InputError` naming ``where``."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise _invalid(where, f"unknown field {unknown[0]!r}", f"Use only {', '.join(_FIELDS)}.")
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        raise _invalid(where, "no prompt", 'Give each request a "prompt" string.')
    output = _optional_str(data, "output", where)
    references = data.get("references", [])
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        raise _invalid(
            where, '"references" is not a list of paths', 'Use e.g. "references": ["a.png"].'
        )
    transparent, overwrite = (_flag(data, name, where) for name in ("transparent", "overwrite"))
    request = ImageRequest(
        prompt=prompt,
        output=output,
        references=tuple(references),
        aspect=_optional_str(data, "aspect", where),
        size=_optional_str(data, "size", where),
        transparent=transparent,
        fit=_optional_str(data, "fit", where),
        overwrite=overwrite,
    )
    request.check(where)
    return request


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What became of one job: an image, an error, or not started (after a quota failure)."""

    index: int
    request: ImageRequest
    status: Status
    result: ImageResult | None = None
    error: CodexImageError | None = field(default=None)
    line: int | None = None
    """The request's line in its batch file (``codex-image batch``)."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "index": self.index,
            "line": self.line,
            "ok": self.ok,
            "status": self.status,
            "request": self.request.to_dict(),
        }
        if self.result is not None:
            data["result"] = self.result.to_dict()
        if self.error is not None:
            data["error"] = self.error.to_dict()
        return data


def parse_batch(text: str) -> list[BatchRequest]:
    """The requests of a batch file: JSON Lines (one object per line) when the first non-blank
    line starts with ``{``, otherwise one prompt per line. Blank lines are skipped.

    Raises :class:`InputError` (reason ``invalid_batch``) naming the line, or ``empty_batch``.
    """
    return [request for _, request in numbered_requests(text)]


def numbered_requests(text: str) -> list[tuple[int, BatchRequest]]:
    """:func:`parse_batch` with each request's line number."""
    # Only \n ends a line: str.splitlines() would also split a JSON string at U+2028.
    raw = text.removeprefix("\ufeff").split("\n")
    lines = [(n, line.strip()) for n, line in enumerate(raw, 1) if line.strip()]
    if not lines:
        raise InputError(
            "The batch has no requests.",
            reason="empty_batch",
            hint="Write one prompt per line, or one JSON object per line with a prompt.",
        )
    numbered: list[tuple[int, BatchRequest]] = []
    json_lines = lines[0][1].startswith("{")
    for number, line in lines:
        where = f"line {number}"
        if not json_lines:
            request = ImageRequest(prompt=line)
            request.check(where)
            numbered.append((number, request))
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            problem = f"not valid JSON ({exc})"
            raise _invalid(where, problem, "Write one JSON object per line.") from None
        if not isinstance(data, dict):
            raise _invalid(where, "not a JSON object", 'Write e.g. {"prompt": "a red fox"}.')
        numbered.append((number, request_from_mapping(data, where)))
    return numbered


def _optional_str(data: Mapping[str, object], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _invalid(where, f'"{key}" is not a string', f'Write "{key}" as a string or leave it out.')


def _flag(data: Mapping[str, object], key: str, where: str) -> bool:
    value = data.get(key, False)
    if isinstance(value, bool):
        return value
    raise _invalid(where, f'"{key}" is not true or false', "Use true or false.")


def _invalid(where: str, problem: str, hint: str) -> InputError:
    return InputError(f"{where}: {problem}.", reason="invalid_batch", hint=hint)


def coerce_requests(requests: Iterable[RequestLike]) -> list[ImageRequest]:
    """Strings and mappings become :class:`BatchRequest`; everything is checked up front."""
    if isinstance(requests, (str, bytes, Mapping)):
        raise InputError(
            f"The requests are one {type(requests).__name__}, not a list of requests.",
            reason="invalid_batch",
            hint='Pass a list, e.g. ["a red fox"] or [{"prompt": "a red fox"}].',
        )
    checked: list[ImageRequest] = []
    for index, item in enumerate(requests):
        where = f"request {index}"
        if isinstance(item, (ImageRequest, str)):
            request = ImageRequest(prompt=item) if isinstance(item, str) else item
            request.check(where)
            checked.append(request)
        elif isinstance(item, Mapping):
            checked.append(request_from_mapping(item, where))
        else:
            raise _invalid(
                where, f"a {type(item).__name__}", "Pass prompts, mappings or ImageRequest objects."
            )
    if not checked:
        raise InputError(
            "The batch has no requests.",
            reason="empty_batch",
            hint="Pass at least one prompt.",
        )
    return checked


def _prepare(
    requests: Sequence[ImageRequest],
    out_dir: str | os.PathLike[str] | None,
    overwrite: bool,
    where: Sequence[str],
) -> list[Path | None]:
    """Each job's output, checked as the job itself would check it (and its references), so
    that no job starts while a later one cannot run. Relative outputs go under ``out_dir``
    (created if missing); two jobs naming one file are refused. Runs in a worker thread."""
    folder = None if out_dir is None else _expand(out_dir, "the output folder").absolute()
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"Could not create the output folder {folder}: {exc.strerror or exc}.",
                reason="output_dir_unusable",
                hint="Choose a folder you can write to.",
            ) from exc
    if any(request.fit for request in requests):
        require_pillow()
    outputs: list[Path | None] = []
    claimed: dict[str, int] = {}
    for index, request in enumerate(requests):
        path = folder
        if request.output is not None:
            path = _expand(request.output, f"{where[index]}: the output")
            if folder is not None and not path.is_absolute():
                path = folder / path
        outputs.append(path)
        try:
            target = plan_output(path, request.prompt, overwrite=overwrite or request.overwrite)
            check_references(list(request.references))
        except InputError as error:
            raise InputError(
                f"{where[index]}: {error.message}", reason=error.reason, hint=error.hint
            ) from None
        if target.named_by_us:
            continue
        key = os.path.realpath(target.path)
        if sys.platform in ("darwin", "win32"):  # case-insensitive file systems by default
            key = key.casefold()
        if key in claimed:
            raise InputError(
                f"{where[claimed[key]]} and {where[index]} both write to {target.path}.",
                reason="duplicate_output",
                hint="Give each request its own output file, or name a folder.",
            )
        claimed[key] = index
    return outputs


def _expand(path: str | os.PathLike[str], what: str) -> Path:
    try:
        return Path(path).expanduser()
    except RuntimeError:  # ~user that does not exist
        raise InputError(
            f"{what} {os.fspath(path)!r} names an unknown home folder.",
            reason="invalid_output",
            hint="Write the path in full.",
        ) from None


OutcomeCallback = Callable[[BatchOutcome], None]
BatchProgressCallback = Callable[[int, Progress], None]


@asynccontextmanager
async def agenerate_many(
    requests: Iterable[RequestLike],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109 (per job, as agenerate's)
    retries: int = 1,
    codex: str | os.PathLike[str] | None = None,
    codex_home: str | os.PathLike[str] | None = None,
    model: str | None = None,
    allow_relay: bool = False,
    wait_for_turn: bool = False,
    keep_codex_copy: bool = False,
    on_progress: BatchProgressCallback | None = None,
    env: Mapping[str, str] | None = None,
    lines: Sequence[int] | None = None,
    profile: str | None = None,
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
    line numbers in a batch file, for messages and outcomes. The other arguments apply to every
    job, as for :func:`~codex_cli_image.agenerate` (timeout is per job).

    A usage limit, exhausted credits or a plan without Codex stops new jobs (the rest are
    ``not_started``, with the error's ``retry_at``); a rate limit (429) pauses new starts for
    its ``retry_after_s`` (10 s when unknown, at most 2 min).

    A throwaway :class:`~codex_cli_image.Client` with ``concurrency``. Raises
    :class:`InputError` before any job starts when a request, one of its files or an argument
    is invalid.
    """
    jobs = coerce_requests(requests)
    async with Client(
        codex=codex, codex_home=codex_home, profile=profile, model=model,
        allow_relay=allow_relay, env=env, timeout=timeout, retries=retries,
        concurrency=concurrency, wait_for_turn=wait_for_turn, keep_codex_copy=keep_codex_copy,
    ) as client, client.agenerate_many(
        jobs, out_dir=out_dir, overwrite=overwrite, on_progress=on_progress, lines=lines
    ) as outcomes:  # fmt: skip
        yield outcomes


@asynccontextmanager
async def run_batch(
    requests: Iterable[RequestLike],
    *,
    limit: _Limit,
    make: Make,
    out_dir: str | os.PathLike[str] | None,
    overwrite: bool,
    on_progress: BatchProgressCallback | None,
    lines: Sequence[int] | None,
    stop_when: Callable[[anyio.CancelScope], Coroutine[Any, Any, None]],
) -> AsyncIterator[AsyncIterator[BatchOutcome]]:
    """The batch engine of a :class:`~codex_cli_image.Client`: jobs start as ``limit`` (the
    client's) has room, each made by ``make``; ``stop_when`` cancels the batch's scope when the
    client closes."""
    jobs = coerce_requests(requests)
    if lines is not None and len(lines) != len(jobs):
        raise InputError(
            "lines must give one line number per request.",
            reason="invalid_batch",
            hint="Pass as many line numbers as requests, or none.",
        )
    where = [f"line {n}" for n in lines] if lines else [f"request {i}" for i in range(len(jobs))]
    outputs = await anyio.to_thread.run_sync(_prepare, jobs, out_dir, overwrite, where)
    resolved = [  # what each job makes; its outcome reports the request as given
        replace(job, output=output, overwrite=overwrite or job.overwrite)
        for job, output in zip(jobs, outputs, strict=True)
    ]
    send, receive = anyio.create_memory_object_stream[BatchOutcome](math.inf)
    stopped: list[QuotaError] = []
    paused_until = 0.0

    def line_of(index: int) -> int | None:
        return lines[index] if lines else None

    async def run_job(index: int, out: MemoryObjectSendStream[BatchOutcome]) -> None:
        nonlocal paused_until
        request = jobs[index]
        progress = None if on_progress is None else partial(_forward, on_progress, index)
        async with out:
            try:
                try:
                    result = await make(resolved[index], progress)
                    outcome = BatchOutcome(index, request, "ok", result, line=line_of(index))
                except Exception as exc:
                    error = exc if isinstance(exc, CodexImageError) else _unexpected(exc)
                    if isinstance(error, QuotaError):
                        # Recorded before the slot is freed, so nothing new starts meanwhile.
                        if error.reason == "rate_limited":
                            asked = error.retry_after_s or RATE_LIMIT_PAUSE_S
                            wait = min(max(asked, 0.0), _MAX_PAUSE_S)
                            paused_until = max(paused_until, time.monotonic() + wait)
                        else:
                            stopped.append(error)
                    outcome = BatchOutcome(index, request, "failed", error=error,
                                           line=line_of(index))  # fmt: skip
                out.send_nowait(outcome)
            finally:
                limit.release()

    async def dispatch(tg: TaskGroup) -> None:
        async with send:
            for index in range(len(jobs)):
                await limit.acquire()
                try:
                    # A deadline that later 429s may push back, not an event to wait for.
                    while (wait := paused_until - time.monotonic()) > 0 and not stopped:  # noqa: ASYNC110
                        await anyio.sleep(wait)
                except BaseException:  # cancelled while paused: the slot is the client's
                    limit.release()
                    raise
                if stopped:
                    limit.release()
                    for rest in range(index, len(jobs)):
                        outcome = _not_started(rest, jobs[rest], stopped[0], line_of(rest))
                        send.send_nowait(outcome)
                    return
                tg.start_soon(run_job, index, send.clone())

    failure: Exception | None = None
    with receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatch, tg)
            tg.start_soon(stop_when, tg.cancel_scope)
            try:
                yield receive
            except Exception as exc:  # the caller's own error: re-raised as is, not grouped
                failure = exc
            finally:
                # Normally all has finished; after an early exit this ends the running jobs.
                tg.cancel_scope.cancel()
    if failure is not None:
        raise failure


def _forward(callback: BatchProgressCallback, index: int, progress: Progress) -> None:
    callback(index, progress)


def _not_started(
    index: int, request: ImageRequest, cause: QuotaError, line: int | None
) -> BatchOutcome:
    error = QuotaError(
        f"Not started: an earlier job hit a limit ({cause.message})",
        reason=cause.reason,
        hint=cause.hint,
        retry_after_s=cause.retry_after_s,
        retry_at=cause.retry_at,
        codex_version=cause.codex_version,
    )
    return BatchOutcome(index, request, "not_started", error=error, line=line)


def generate_many(
    requests: Iterable[RequestLike],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = 1,
    codex: str | os.PathLike[str] | None = None,
    codex_home: str | os.PathLike[str] | None = None,
    model: str | None = None,
    allow_relay: bool = False,
    wait_for_turn: bool = False,
    keep_codex_copy: bool = False,
    on_progress: BatchProgressCallback | None = None,
    on_outcome: OutcomeCallback | None = None,
    env: Mapping[str, str] | None = None,
    lines: Sequence[int] | None = None,
    profile: str | None = None,
) -> list[BatchOutcome]:
    """The blocking twin of :func:`agenerate_many`: every outcome, in request order.

    ``on_outcome`` is called as each job finishes, on the batch's event loop thread (keep it
    quick); an exception from it stops the batch, ends every running job and propagates.
    Ctrl-C stops every job and ends every codex process tree before ``KeyboardInterrupt``
    propagates.
    """
    jobs = coerce_requests(requests)  # bad input raises before a worker thread and a loop start
    with Client(
        codex=codex, codex_home=codex_home, profile=profile, model=model,
        allow_relay=allow_relay, env=env, timeout=timeout, retries=retries,
        concurrency=concurrency, wait_for_turn=wait_for_turn, keep_codex_copy=keep_codex_copy,
    ) as client:  # fmt: skip
        return client.generate_many(
            jobs,
            out_dir=out_dir,
            overwrite=overwrite,
            on_progress=on_progress,
            on_outcome=on_outcome,
            lines=lines,
        )


def _unexpected(exc: Exception) -> TransientError:
    log.error("unexpected error in a batch job", exc_info=exc)
    return internal_error(exc)
