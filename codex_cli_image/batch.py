"""The batch engine under :meth:`Client.generate_many <codex_cli_image.Client.generate_many>`,
and the parsing of batch files.

Each job is one image with its own codex process, thread and workspace, so a job's image can
only come from its own thread. At most ``concurrency`` jobs run at once (the backend answers 429
when more than 2-3 image streams run). A failing job does not stop the others, except a quota
failure: the jobs not yet started would all fail the same way, so they are reported as not
started, with the quota error's ``retry_at``.

Requests are checked before any job starts (a typo on line 40 must not surface after 39 images
were paid for); the parsing of batch files is pure.
"""

from __future__ import annotations

import json
import logging
import math
import os
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
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ._limit import Limit
from .errors import (
    CodexImageError,
    InputError,
    QuotaError,
    TransientError,
    internal_error,
    log_unexpected,
)
from .output import path_key
from .pipeline import Plan, plan_image
from .request import ImageRequest
from .results import ImageResult, Progress, ProgressCallback

__all__ = [
    "BatchOutcome",
    "BatchRequest",
    "coerce_requests",
    "numbered_requests",
    "parse_batch",
    "plan_batch",
    "run_batch",
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


def plan_batch(
    requests: Sequence[ImageRequest],
    out_dir: str | os.PathLike[str] | None,
    overwrite: bool,
    where: Sequence[str],
) -> list[Plan]:
    """Each job planned as the job itself would be (request, references, output), so that no job
    starts while a later one cannot run. Relative outputs go under ``out_dir`` (created if
    missing); two jobs naming one file are refused. Blocking: run it in a worker thread."""
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
    plans: list[Plan] = []
    claimed: dict[str, int] = {}
    for index, request in enumerate(requests):
        path = folder
        if request.output is not None:
            path = _expand(request.output, f"{where[index]}: the output")
            if folder is not None and not path.is_absolute():
                path = folder / path
        job = replace(request, output=path, overwrite=overwrite or request.overwrite)
        plan = plan_image(job, where=where[index])
        plans.append(plan)
        for path in plan.writes:  # the output, and a fit copy beside it
            key = path_key(path)
            if key in claimed:
                raise InputError(
                    f"{where[claimed[key]]} and {where[index]} both write to {path}.",
                    reason="duplicate_output",
                    hint="Give each request its own output file, or name a folder.",
                )
            claimed[key] = index
    return plans


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
Make = Callable[[Plan, ProgressCallback | None], Awaitable[ImageResult]]


@asynccontextmanager
async def run_batch(
    jobs: Sequence[ImageRequest],
    *,
    limit: Limit,
    make: Make,
    out_dir: str | os.PathLike[str] | None,
    overwrite: bool,
    on_progress: BatchProgressCallback | None,
    lines: Sequence[int] | None,
    stop_when: Callable[[anyio.CancelScope], Coroutine[Any, Any, None]],
) -> AsyncIterator[AsyncIterator[BatchOutcome]]:
    """The batch engine of a :class:`~codex_cli_image.Client`: the checked ``jobs`` start as
    ``limit`` (the client's) has room, each made by ``make``; ``stop_when`` cancels the batch's
    scope when the client closes."""
    if lines is not None and len(lines) != len(jobs):
        raise InputError(
            "lines must give one line number per request.",
            reason="invalid_batch",
            hint="Pass as many line numbers as requests, or none.",
        )
    where = [f"line {n}" for n in lines] if lines else [f"request {i}" for i in range(len(jobs))]
    plans = await anyio.to_thread.run_sync(plan_batch, jobs, out_dir, overwrite, where)
    batch = _Batch(jobs, plans, limit, make, on_progress, lines)
    failure: Exception | None = None
    with batch.receive:
        async with anyio.create_task_group() as tg:
            # A close ends the jobs, not the caller's reading: every outcome still comes out.
            tg.start_soon(batch.run, stop_when)
            try:
                yield batch.receive
            except Exception as exc:  # the caller's own error: re-raised as is, not grouped
                failure = exc
            finally:
                # Normally all has finished; after an early exit this ends the running jobs.
                tg.cancel_scope.cancel()
    if failure is not None:
        raise failure


class _Batch:
    """The jobs of one batch and what they share: the limit, and a stop after a quota failure
    or a pause after a rate limit."""

    def __init__(
        self,
        jobs: Sequence[ImageRequest],
        plans: list[Plan],
        limit: Limit,
        make: Make,
        on_progress: BatchProgressCallback | None,
        lines: Sequence[int] | None,
    ) -> None:
        self.jobs, self.plans, self.limit, self.make = jobs, plans, limit, make
        self.on_progress, self.lines = on_progress, lines
        self.send, self.receive = anyio.create_memory_object_stream[BatchOutcome](math.inf)
        self.stopped: list[QuotaError] = []
        self.paused_until = 0.0

    def line_of(self, index: int) -> int | None:
        return self.lines[index] if self.lines else None

    async def run(
        self, stop_when: Callable[[anyio.CancelScope], Coroutine[Any, Any, None]]
    ) -> None:
        """Every job, until all are done or ``stop_when`` ends them."""
        async with anyio.create_task_group() as watched:
            watched.start_soon(stop_when, watched.cancel_scope)
            async with anyio.create_task_group() as jobs:
                await self.dispatch(jobs)
            watched.cancel_scope.cancel()

    async def dispatch(self, tg: TaskGroup) -> None:
        async with self.send:
            index = 0
            try:
                while index < len(self.jobs):
                    if not await self._start(index, tg):
                        return
                    index += 1
            except anyio.get_cancelled_exc_class():  # the client closed: the rest get outcomes
                for rest in range(index, len(self.jobs)):
                    outcome = BatchOutcome(rest, self.jobs[rest], "not_started", error=_closed(),
                                           line=self.line_of(rest))  # fmt: skip
                    self.send.send_nowait(outcome)
                raise

    async def _start(self, index: int, tg: TaskGroup) -> bool:
        """Start job ``index`` once a slot is free; False when a quota failure stopped the
        batch (the rest are reported as not started)."""
        await self.limit.acquire()
        try:
            await self._wait_out_pause()
        except BaseException:  # cancelled while paused: the slot is the client's
            self.limit.release()
            raise
        if self.stopped:
            self.limit.release()
            for rest in range(index, len(self.jobs)):
                self.send.send_nowait(_not_started(
                    rest, self.jobs[rest], self.stopped[0], self.line_of(rest)
                ))  # fmt: skip
            return False
        tg.start_soon(self.run_job, index, self.send.clone())
        return True

    async def _wait_out_pause(self) -> None:
        # A deadline that later 429s may push back, not an event to wait for.
        while (wait := self.paused_until - time.monotonic()) > 0 and not self.stopped:  # noqa: ASYNC110
            await anyio.sleep(wait)

    async def run_job(self, index: int, out: MemoryObjectSendStream[BatchOutcome]) -> None:
        request, line = self.jobs[index], self.line_of(index)
        progress = None if self.on_progress is None else partial(self.on_progress, index)
        async with out:
            try:
                try:
                    result = await self.make(self.plans[index], progress)
                    outcome = BatchOutcome(index, request, "ok", result, line=line)
                except Exception as exc:
                    error = exc if isinstance(exc, CodexImageError) else _unexpected(exc)
                    self._note(error)  # before the slot is freed: nothing new starts meanwhile
                    outcome = BatchOutcome(index, request, "failed", error=error, line=line)
                except anyio.get_cancelled_exc_class():  # the client closed: say so, then end
                    out.send_nowait(BatchOutcome(index, request, "failed", error=_closed(),
                                                 line=line))  # fmt: skip
                    raise
                out.send_nowait(outcome)
            finally:
                self.limit.release()

    def _note(self, error: CodexImageError) -> None:
        if not isinstance(error, QuotaError):
            return
        if error.reason == "rate_limited":
            wait = min(max(error.retry_after_s or RATE_LIMIT_PAUSE_S, 0.0), _MAX_PAUSE_S)
            self.paused_until = max(self.paused_until, time.monotonic() + wait)
        else:
            self.stopped.append(error)


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


def _closed() -> TransientError:
    return TransientError(
        "The Client was closed before this image was made; nothing was saved for it.",
        reason="cancelled",
        hint="Retry it with a client that stays open until the batch ends.",
    )


def _unexpected(exc: Exception) -> TransientError:
    log_unexpected(log, "unexpected error in a batch job", exc)
    return internal_error(exc)
