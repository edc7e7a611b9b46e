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
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from .api import DEFAULT_TIMEOUT_S, ImageResult, agenerate, run_blocking
from .errors import CodexImageError, InputError, QuotaError
from .prompt import check_prompt
from .request import MAX_REFERENCES, parse_aspect, parse_size
from .runner import Progress

__all__ = [
    "BatchOutcome",
    "BatchRequest",
    "agenerate_many",
    "generate_many",
    "parse_batch",
]

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 2
MAX_CONCURRENCY = 16
Status = Literal["ok", "failed", "not_started"]
_FIELDS = ("prompt", "output", "references", "aspect", "size", "transparent", "fit")


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One job of a batch: the per-image arguments of :func:`~codex_cli_image.generate`."""

    prompt: str
    output: str | None = None
    references: tuple[str, ...] = ()
    aspect: str | None = None
    size: str | None = None
    transparent: bool = False
    fit: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], where: str = "request") -> BatchRequest:
        """Build a request from a JSON object, or raise :class:`InputError` naming ``where``."""
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise _invalid(
                where,
                f"unknown field {unknown[0]!r}",
                f"Use only {', '.join(_FIELDS)}.",
            )
        prompt = data.get("prompt")
        if not isinstance(prompt, str):
            raise _invalid(where, "no prompt", 'Give each request a "prompt" string.')
        output = _optional_str(data, "output", where)
        references = data.get("references", [])
        if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
            raise _invalid(
                where, '"references" is not a list of paths', 'Use e.g. "references": ["a.png"].'
            )
        transparent = data.get("transparent", False)
        if not isinstance(transparent, bool):
            raise _invalid(where, '"transparent" is not true or false', "Use true or false.")
        request = cls(
            prompt=prompt,
            output=output,
            references=tuple(references),
            aspect=_optional_str(data, "aspect", where),
            size=_optional_str(data, "size", where),
            transparent=transparent,
            fit=_optional_str(data, "fit", where),
        )
        request.check(where)
        return request

    def check(self, where: str = "request") -> None:
        """The checks that need no file system: prompt, geometry, number of references."""
        try:
            check_prompt(self.prompt)
            if self.aspect is not None:
                parse_aspect(self.aspect)
            for size in (self.size, self.fit):
                if size is not None:
                    parse_size(size)
        except InputError as error:
            raise InputError(
                f"{where}: {error.message}", reason=error.reason, hint=error.hint
            ) from None
        if len(self.references) > MAX_REFERENCES:
            raise InputError(
                f"{where}: {len(self.references)} references, more than the image tool's "
                f"{MAX_REFERENCES}.",
                reason="too_many_references",
                hint=f"Pass at most {MAX_REFERENCES} reference images.",
            )

    def to_dict(self) -> dict[str, object]:
        return {
            "prompt": self.prompt,
            "output": self.output,
            "references": list(self.references),
            "aspect": self.aspect,
            "size": self.size,
            "transparent": self.transparent,
            "fit": self.fit,
        }


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What became of one job: an image, an error, or not started (after a quota failure)."""

    index: int
    request: BatchRequest
    status: Status
    result: ImageResult | None = None
    error: CodexImageError | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "index": self.index,
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
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise InputError(
            "The batch has no requests.",
            reason="empty_batch",
            hint="Write one prompt per line, or one JSON object per line with a prompt.",
        )
    if not lines[0][1].startswith("{"):
        requests = [BatchRequest(prompt=line) for _, line in lines]
        for (number, _), request in zip(lines, requests, strict=True):
            request.check(f"line {number}")
        return requests
    parsed: list[BatchRequest] = []
    for number, line in lines:
        where = f"line {number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            problem = f"not valid JSON ({exc})"
            raise _invalid(where, problem, "Write one JSON object per line.") from None
        if not isinstance(data, dict):
            raise _invalid(where, "not a JSON object", 'Write e.g. {"prompt": "a red fox"}.')
        parsed.append(BatchRequest.from_mapping(data, where))
    return parsed


def _optional_str(data: Mapping[str, object], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _invalid(where, f'"{key}" is not a string', f'Write "{key}" as a string or leave it out.')


def _invalid(where: str, problem: str, hint: str) -> InputError:
    return InputError(f"{where}: {problem}.", reason="invalid_batch", hint=hint)


def coerce_requests(
    requests: Iterable[BatchRequest | str | Mapping[str, object]],
) -> list[BatchRequest]:
    """Strings and mappings become :class:`BatchRequest`; everything is checked up front."""
    checked: list[BatchRequest] = []
    for index, item in enumerate(requests):
        where = f"request {index}"
        if isinstance(item, BatchRequest):
            item.check(where)
            checked.append(item)
        elif isinstance(item, str):
            request = BatchRequest(prompt=item)
            request.check(where)
            checked.append(request)
        elif isinstance(item, Mapping):
            checked.append(BatchRequest.from_mapping(item, where))
        else:
            raise _invalid(
                where, f"a {type(item).__name__}", "Pass prompts, mappings or BatchRequest objects."
            )
    if not checked:
        raise InputError(
            "The batch has no requests.",
            reason="empty_batch",
            hint="Pass at least one prompt.",
        )
    return checked


def _outputs(
    requests: Sequence[BatchRequest], out_dir: str | os.PathLike[str] | None
) -> list[str | os.PathLike[str] | None]:
    """Each job's output: relative paths under ``out_dir`` (created if missing); two jobs naming
    one file are refused."""
    if out_dir is not None:
        out_dir = Path(out_dir).expanduser().absolute()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"Could not create the output folder {out_dir}: {exc.strerror or exc}.",
                reason="output_dir_unusable",
                hint="Choose a folder you can write to.",
            ) from exc
    outputs: list[str | os.PathLike[str] | None] = []
    claimed: dict[Path, int] = {}
    for index, request in enumerate(requests):
        if request.output is None:
            outputs.append(out_dir)
            continue
        path = Path(request.output).expanduser()
        if out_dir is not None and not path.is_absolute():
            path = out_dir / path
        outputs.append(path)
        if path.is_dir() or request.output.endswith(("/", os.sep)):
            continue
        key = Path(os.path.normcase(path.absolute()))
        if key in claimed:
            raise InputError(
                f"Requests {claimed[key]} and {index} both write to {path}.",
                reason="duplicate_output",
                hint="Give each request its own output file, or name a folder.",
            )
        claimed[key] = index
    return outputs


OutcomeCallback = Callable[[BatchOutcome], None]
BatchProgressCallback = Callable[[int, Progress], None]


@asynccontextmanager
async def agenerate_many(
    requests: Iterable[BatchRequest | str | Mapping[str, object]],
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
) -> AsyncIterator[AsyncIterator[BatchOutcome]]:
    """Run a batch; yields an iterator of :class:`BatchOutcome` in the order jobs finish.

    ::

        async with agenerate_many(["a fox", "a hen"], out_dir="out") as outcomes:
            async for outcome in outcomes:
                print(outcome.index, outcome.status, outcome.result or outcome.error)

    Every outcome comes out, one per request (not-started ones included). Leaving the block
    early, or cancelling, stops every running job and ends its codex process tree. requests:
    prompts, mappings (the JSON Lines fields) or :class:`BatchRequest`. out_dir: where images
    without an output go, and what relative outputs are relative to (created if missing).
    on_progress: called with the job's index and its :class:`Progress`. The other arguments
    apply to every job, as for :func:`~codex_cli_image.agenerate` (timeout is per job).

    Raises :class:`InputError` before any job starts when a request or argument is invalid.
    """
    jobs = coerce_requests(requests)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InputError(
            f"The concurrency {concurrency} is out of range.",
            reason="invalid_concurrency",
            hint=f"Run 1 to {MAX_CONCURRENCY} jobs at once (2 avoids the backend's rate limit).",
        )
    outputs = await anyio.to_thread.run_sync(_outputs, jobs, out_dir)
    common = {
        "overwrite": overwrite,
        "timeout": timeout,
        "retries": retries,
        "codex": codex,
        "codex_home": codex_home,
        "model": model,
        "allow_relay": allow_relay,
        "wait_for_turn": wait_for_turn,
        "keep_codex_copy": keep_codex_copy,
        "env": env,
    }
    send, receive = anyio.create_memory_object_stream[BatchOutcome](math.inf)
    limiter = anyio.CapacityLimiter(concurrency)
    stopped: list[QuotaError] = []

    async def run_job(index: int, token: object, out: MemoryObjectSendStream[BatchOutcome]) -> None:
        request = jobs[index]
        progress = None if on_progress is None else partial(_forward, on_progress, index)
        async with out:
            try:
                try:
                    result = await agenerate(
                        request.prompt,
                        output=outputs[index],
                        references=request.references,
                        aspect=request.aspect,
                        size=request.size,
                        transparent=request.transparent,
                        fit=request.fit,
                        on_progress=progress,
                        **common,  # type: ignore[arg-type]
                    )
                    outcome = BatchOutcome(index, request, "ok", result=result)
                except CodexImageError as error:
                    if isinstance(error, QuotaError):
                        stopped.append(error)  # before the slot is freed: nothing new starts
                    outcome = BatchOutcome(index, request, "failed", error=error)
                out.send_nowait(outcome)
            finally:
                limiter.release_on_behalf_of(token)

    async def dispatch(tg: TaskGroup) -> None:
        async with send:
            for index in range(len(jobs)):
                token = object()
                await limiter.acquire_on_behalf_of(token)
                if stopped:
                    limiter.release_on_behalf_of(token)
                    for rest in range(index, len(jobs)):
                        send.send_nowait(_not_started(rest, jobs[rest], stopped[0]))
                    return
                tg.start_soon(run_job, index, token, send.clone())

    with receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatch, tg)
            try:
                yield receive
            finally:
                # Normally all has finished; after an early exit this ends the running jobs.
                tg.cancel_scope.cancel()


def _forward(callback: BatchProgressCallback, index: int, progress: Progress) -> None:
    callback(index, progress)


def _not_started(index: int, request: BatchRequest, cause: QuotaError) -> BatchOutcome:
    error = QuotaError(
        f"Not started: an earlier job hit a limit ({cause.message})",
        reason=cause.reason,
        hint=cause.hint,
        retry_after_s=cause.retry_after_s,
        retry_at=cause.retry_at,
        codex_version=cause.codex_version,
    )
    return BatchOutcome(index, request, "not_started", error=error)


def generate_many(
    requests: Iterable[BatchRequest | str | Mapping[str, object]],
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
) -> list[BatchOutcome]:
    """The blocking twin of :func:`agenerate_many`: every outcome, in request order.

    ``on_outcome`` is called (from a worker thread) as each job finishes. Ctrl-C stops every job
    and ends every codex process tree before ``KeyboardInterrupt`` propagates.
    """
    started = time.monotonic()
    # Checked here too, so bad input raises before a worker thread and event loop start.
    jobs = coerce_requests(requests)

    async def collect() -> list[BatchOutcome]:
        collected: list[BatchOutcome] = []
        async with agenerate_many(
            jobs,
            concurrency=concurrency,
            out_dir=out_dir,
            overwrite=overwrite,
            timeout=timeout,
            retries=retries,
            codex=codex,
            codex_home=codex_home,
            model=model,
            allow_relay=allow_relay,
            wait_for_turn=wait_for_turn,
            keep_codex_copy=keep_codex_copy,
            on_progress=on_progress,
            env=env,
        ) as outcomes:
            async for outcome in outcomes:
                collected.append(outcome)
                if on_outcome is not None:
                    try:
                        on_outcome(outcome)
                    except Exception:  # a broken callback must not abandon running jobs
                        log.exception("on_outcome callback failed")
        return sorted(collected, key=lambda outcome: outcome.index)

    outcomes = run_blocking(collect)
    log.debug("batch of %d finished in %.1f s", len(jobs), time.monotonic() - started)
    return outcomes
