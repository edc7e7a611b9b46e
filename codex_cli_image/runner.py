"""Run one ``codex exec --json`` image turn and prove what it produced (the async I/O shell).

One attempt: a private temporary workspace, codex started as the leader of its own process group
with the instruction on stdin (then closed), stdout decoded as events while stderr drains into a
bounded tail, and ``$CODEX_HOME/generated_images/<thread_id>/`` watched for a new PNG. As soon as
one is complete and verified, codex is stopped: the closing model message is not worth waiting
for (unless ``wait_for_turn``). Without a file, the session rollout is read for the image or for
why there is none. Timeouts and cancellation end the whole process tree, reap it and remove the
workspace before the exception propagates.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from stat import S_ISREG
from typing import Literal

import anyio
import anyio.abc

from . import _proc
from ._watchdog import WATCHDOG
from .endpoint import HTTP_TARGET, http_log_line, rust_log
from .errors import (
    CodexImageError,
    LaunchError,
    TransientError,
    internal_error,
    log_unexpected,
)
from .events import (
    AgentMessage,
    ErrorNotice,
    EventDecoder,
    ThreadStarted,
    TurnCompleted,
    TurnFailed,
)
from .failures import RunOutcome, classify
from .launcher import YIELD_SETTING, Codex
from .lockdown import lockdown_options
from .png import MAX_IMAGE_BYTES, PngError, PngInfo, inspect_png
from .redact import read_login_secrets, redact
from .request import Reference, reference_names, stage_reference
from .results import Phase
from .rollout import ImageRecord, find_rollout, read_rollout
from .usage import UsageLimits

__all__ = ["Attempt", "Produced", "run_attempt"]

log = logging.getLogger(__name__)

POLL_S = 0.02
_USAGE_GRACE_S = 0.3  # 0.149 writes them milliseconds after the tool output
_TOKEN_COUNT = b"token_count"  # a prompt that says it only shortens the wait
_EOF_WAIT_S = 2.0
STDERR_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Produced:
    """A verified image from one attempt."""

    data: bytes
    info: PngInfo
    source: Literal["file", "rollout"]
    codex_file: Path | None
    thread_id: str
    usage: dict[str, int] | None
    revised_prompt: str | None
    usage_limits: UsageLimits | None = None
    """The usage windows codex recorded in this run's session log."""
    image_requests: int = 0
    """How many images requests codex sent (0 where it does not say)."""


@dataclass(slots=True)
class Attempt:
    """What one attempt needs to know; the mutable state lives in :class:`_State`."""

    codex: Codex
    codex_home: Path
    instruction: str
    deadline: float
    """``time.monotonic()`` by which the image must be there."""
    timeout_s: float
    model: str | None = None
    profile: str | None = None
    disable: tuple[str, ...] = ()
    """Features to turn off (codex refuses unknown names: ask it first)."""
    yield_setting: bool = False
    """Whether this codex takes :data:`~codex_cli_image.launcher.YIELD_SETTING`."""
    mcp_servers: tuple[str, ...] = ()
    """The user's MCP servers, each turned off by name."""
    wait_for_turn: bool = False
    codex_version: str | None = None
    references: tuple[Reference, ...] = ()
    emit: Callable[[Phase, str | None, str | None], None] = lambda *_: None


@dataclass(slots=True)
class _State:
    thread_id: str | None = None
    thread_seen: anyio.Event = field(default_factory=anyio.Event)
    turn_failed: str | None = None
    errors: list[str] = field(default_factory=list)
    agent_messages: list[str] = field(default_factory=list)
    usage: dict[str, int] | None = None
    image: tuple[Path, bytes, PngInfo] | None = None
    invalid: str | None = None
    """Why the image found is not valid; ``invalid_source`` says where it was found."""
    invalid_source: Literal["file", "log"] = "file"
    invalid_path: Path | None = None
    """The file codex saved that is not a valid PNG (it is left where it is)."""
    too_large: bool = False
    refused: dict[Path, tuple[int, int]] = field(default_factory=dict)
    """Size and mtime of each file whose content failed verification."""
    stderr: bytearray = field(default_factory=bytearray)
    stdout_done: anyio.Event = field(default_factory=anyio.Event)
    stderr_done: anyio.Event = field(default_factory=anyio.Event)
    secrets: tuple[str, ...] = ()
    """The login's secrets, kept out of every text passed on (:mod:`.redact`)."""
    usage_limits: UsageLimits | None = None
    """The usage windows codex recorded last in the session log."""
    image_requests: int = 0
    """The images requests codex sent (its HTTP log; 0.149+): more than one is a resend."""


async def run_attempt(attempt: Attempt) -> Produced:
    """Run codex once. Returns the verified image or raises the classified error."""
    try:
        workspace = Path(tempfile.mkdtemp(prefix="codex-image-"))
    except OSError as exc:
        raise _workspace_error(exc) from exc
    try:
        return await _run(attempt, workspace)
    except CodexImageError:
        raise
    except OSError as exc:
        raise LaunchError(
            f"Could not run {attempt.codex.path}: {exc.strerror or exc}.",
            reason="codex_not_executable",
            hint="Check the codex installation with `codex-image doctor`.",
            codex_version=attempt.codex_version,
        ) from exc
    except Exception as exc:  # the one boundary for surprises: a bug of ours, never retried
        log_unexpected(log, "unexpected error while running codex", exc)
        error = internal_error(exc)
        error.codex_version = attempt.codex_version
        raise error from exc
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, workspace, True)


async def _run(attempt: Attempt, workspace: Path) -> Produced:
    state = _State()
    state.secrets = await anyio.to_thread.run_sync(read_login_secrets, attempt.codex_home)
    names = await anyio.to_thread.run_sync(_stage_references, attempt.references, workspace)
    process = await _start(attempt, workspace, names)
    job: _proc.ProcessJob | None = None
    timed_out = False
    try:
        job = _proc.ProcessJob()  # Windows: codex's helpers join it, and end with it
        WATCHDOG.watch(process.pid, str(workspace))
        job.add(process.pid)
        with anyio.move_on_after(max(0.0, attempt.deadline - time.monotonic())) as deadline:
            await _follow(process, state, attempt)
        timed_out = deadline.cancelled_caught and state.image is None
    finally:
        with anyio.CancelScope(shield=True):
            await stop_codex(process, job)
    return await _collect(attempt, state, process.returncode, timed_out)


def _yield_options(attempt: Attempt) -> list[str]:
    """Code mode's cell waits for the image as long as we do: after its default 30 s it hands
    back to the model, which must ask again and again (a model request each time) or drop the
    image (codex-facts section 12). On 0.149 the table this makes turns a user's
    ``code_mode = true`` off: the image tool is then called directly, which waits anyway."""
    if not attempt.yield_setting:
        return []
    return ["--config", f"{YIELD_SETTING}={max(1000, int(attempt.timeout_s * 1000))}"]


def _stage_references(references: tuple[Reference, ...], workspace: Path) -> list[str]:
    """The checked references, copied under plain names (relative to the workspace, where
    codex runs: commas in a temp path cannot split the value) with the bytes that were
    checked."""
    names = reference_names(references)
    try:
        for reference, name in zip(references, names, strict=True):
            stage_reference(reference, workspace / name)
    except OSError as exc:  # the reference's own errors are InputErrors: this is the workspace
        raise _workspace_error(exc) from exc
    return names


def _workspace_error(exc: OSError) -> TransientError:
    where = tempfile.gettempdir()
    return TransientError(
        f"Could not prepare codex's workspace in {where}: {exc.strerror or exc}.",
        reason="workspace_failed",
        hint=f"Free some space in {where}, or point TMPDIR at a folder with room.",
    )


async def _start(attempt: Attempt, workspace: Path, images: list[str]) -> anyio.abc.Process:
    argv = attempt.codex.command(
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--sandbox",
        "read-only",
        "--cd",
        str(workspace),
        "--config",
        "analytics.enabled=false",
        # Plain stderr lines (FORCE_COLOR would colour them even on a pipe): they are parsed.
        "--color",
        "never",
        # The model gets the image tool and nothing else: a prompt is untrusted input.
        *lockdown_options(attempt.disable, attempt.mcp_servers),
        *_yield_options(attempt),
        # One argument, so a model name can never be read as an option.
        *([f"--model={attempt.model}"] if attempt.model else []),
        *([f"--profile={attempt.profile}"] if attempt.profile else []),
        # -i takes several values: "--" ends the list before "-" (stdin), or "-" is a file.
        *([*(f"--image={name}" for name in images), "--"] if images else []),
        "-",
    )
    # A line per HTTP request on stderr: codex's resends of the images request counted.
    env = {**attempt.codex.env, "CODEX_HOME": str(attempt.codex_home),
           "RUST_LOG": rust_log(attempt.codex.env.get("RUST_LOG"))}  # fmt: skip
    return await start_codex(argv, cwd=workspace, env=env)


async def start_codex(
    argv: list[str], *, cwd: Path, env: dict[str, str], stderr: int = subprocess.PIPE
) -> anyio.abc.Process:
    """codex started as the leader of its own process group (a session on POSIX), its pipes
    ours; the watchdog is started first: if we die from here on, its group is ended."""
    group = _proc.new_group_kwargs()
    WATCHDOG.start()
    return await anyio.open_process(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=cwd,
        env=env,
        start_new_session=bool(group.get("start_new_session")),
        creationflags=int(group.get("creationflags", 0)),
    )


async def _follow(process: anyio.abc.Process, state: _State, attempt: Attempt) -> None:
    """Feed codex its prompt and follow it until it exits or the image is safe."""
    async with anyio.create_task_group() as tasks:
        # Sent while stdout and stderr drain: codex may write before it reads.
        tasks.start_soon(_send_prompt, process, attempt.instruction)
        tasks.start_soon(_read_events, process, state, attempt)
        tasks.start_soon(_drain_stderr, process, state)
        tasks.start_soon(_watch_images, state, attempt, tasks.cancel_scope)
        await process.wait()
        # Take in the last events (a helper that inherited the pipes may keep them open:
        # bounded), then stop watching.
        with anyio.move_on_after(_EOF_WAIT_S):
            await state.stdout_done.wait()
            await state.stderr_done.wait()
        tasks.cancel_scope.cancel()


async def _collect(
    attempt: Attempt, state: _State, returncode: int | None, timed_out: bool
) -> Produced:
    """The image codex saved (or kept in its session log), or the classified error; codex's
    texts in either are redacted (tokens it refreshed meanwhile too)."""
    fresh = await anyio.to_thread.run_sync(read_login_secrets, attempt.codex_home)
    state.secrets = tuple(dict.fromkeys((*fresh, *state.secrets)))
    clean = partial(_redacted, state.secrets)  # for texts that may be missing
    # The file may have landed between the last look and the exit.
    if state.image is None and state.thread_id is not None:
        await anyio.to_thread.run_sync(_look_for_image, state, attempt.codex_home, True)
        if state.image is not None:
            attempt.emit("image_saved", str(state.image[0]), state.thread_id)
    if state.image is not None:
        path, data, info = state.image
        revised = await anyio.to_thread.run_sync(_revised_prompt, attempt, state, path)
        return Produced(data, info, "file", path, state.thread_id or "", state.usage,
                        clean(revised), state.usage_limits, state.image_requests)  # fmt: skip
    # The log's copy of a file too large to read is as large: not decoded either.
    record = (
        None if state.too_large else await anyio.to_thread.run_sync(_rollout_image, attempt, state)
    )
    if record is not None and record[0] is not None:
        data, info = record[0]
        return Produced(data, info, "rollout", None, state.thread_id or "", state.usage,
                        clean(record[1].revised_prompt), state.usage_limits,
                        state.image_requests)  # fmt: skip
    failed = record[1] if record is not None else None
    raise classify(
        RunOutcome(
            exit_code=None if timed_out else returncode,
            timed_out=timed_out,
            turn_failed=clean(state.turn_failed),
            errors=tuple(redact(error, state.secrets) for error in state.errors),
            agent_messages=tuple(redact(text, state.secrets) for text in state.agent_messages),
            stderr_tail=redact(_tail_text(state.stderr), state.secrets),
            image_status=failed.status if failed else None,
            image_failure=clean(failed.failure if failed else None),
            invalid_image=state.invalid,
            invalid_source=state.invalid_source,
            invalid_path=str(state.invalid_path) if state.invalid_path else None,
            image_too_large=state.too_large and state.invalid_path is not None,
            timeout_s=attempt.timeout_s,
            codex_version=attempt.codex_version,
            thread_id=state.thread_id,
            limits_reset_at=state.usage_limits.last_reset if state.usage_limits else None,
        ),
        now=dt.datetime.now().astimezone(),
    )


async def _send_prompt(process: anyio.abc.Process, text: str) -> None:
    assert process.stdin is not None
    try:
        await process.stdin.send(text.encode("utf-8"))
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # codex exited before reading; its exit and stderr tell why
    finally:
        # Closed stdin is what ends codex's read of the prompt: open, it would wait forever.
        await process.stdin.aclose()


async def _read_events(process: anyio.abc.Process, state: _State, attempt: Attempt) -> None:
    assert process.stdout is not None
    decoder = EventDecoder()
    async for chunk in process.stdout:
        for event in decoder.feed(chunk):
            _apply(event, state, attempt)
    for event in decoder.flush():
        _apply(event, state, attempt)
    state.stdout_done.set()
    if decoder.malformed or decoder.oversized:
        log.info(
            "skipped %d malformed and %d oversized event lines",
            decoder.malformed,
            decoder.oversized,
        )


def _apply(event: object, state: _State, attempt: Attempt) -> None:
    if isinstance(event, ThreadStarted) and state.thread_id is None:
        state.thread_id = event.thread_id
        state.thread_seen.set()
        attempt.emit("thread_started", None, event.thread_id)
    elif isinstance(event, ErrorNotice):
        if event.reconnecting:
            attempt.emit("reconnecting", redact(event.message, state.secrets), state.thread_id)
        else:
            state.errors.append(event.message)
    elif isinstance(event, AgentMessage):
        state.agent_messages.append(event.text)
        attempt.emit("agent_message", redact(event.text, state.secrets), state.thread_id)
    elif isinstance(event, TurnFailed):
        state.turn_failed = event.message
    elif isinstance(event, TurnCompleted):
        state.usage = event.usage


async def _drain_stderr(process: anyio.abc.Process, state: _State) -> None:
    """Keep stderr's tail; codex's HTTP request lines are counted (its image requests), not
    kept (they carry the backend's response headers)."""
    assert process.stderr is not None
    partial_line = bytearray()
    async for chunk in process.stderr:
        partial_line += chunk
        end = partial_line.rfind(b"\n") + 1
        if end == 0 and len(partial_line) <= STDERR_TAIL_BYTES:
            continue
        end = end or len(partial_line)  # a line that long is kept as it is
        _take_stderr(state, bytes(partial_line[:end]))
        del partial_line[:end]
    _take_stderr(state, bytes(partial_line))
    state.stderr_done.set()


def _take_stderr(state: _State, lines: bytes) -> None:
    if HTTP_TARGET in lines:
        kept = []
        for line in lines.splitlines(keepends=True):
            if HTTP_TARGET not in line:
                kept.append(line)
            elif http_log_line(line):  # whatever its form, its headers are not kept
                state.image_requests += 1
        lines = b"".join(kept)
    state.stderr += lines
    if len(state.stderr) > 2 * STDERR_TAIL_BYTES:
        del state.stderr[:-STDERR_TAIL_BYTES]


async def _watch_images(state: _State, attempt: Attempt, scope: anyio.CancelScope) -> None:
    await state.thread_seen.wait()
    while state.image is None:
        await anyio.sleep(POLL_S)
        await anyio.to_thread.run_sync(_look_for_image, state, attempt.codex_home)
    attempt.emit("image_saved", str(state.image[0]), state.thread_id)
    if not attempt.wait_for_turn:
        # The usage windows of the image's model answer may land in the log just after the
        # tool's output (0.149): a moment for them (not more: a late one is not worth an early
        # stop), then stop codex without waiting for its closing message.
        with anyio.move_on_after(_USAGE_GRACE_S):
            await _usage_recorded(attempt, state)
        scope.cancel()


async def _usage_recorded(attempt: Attempt, state: _State) -> None:
    """Return once the session log holds a ``token_count`` record (read from where the last
    look stopped: the log can hold a large image)."""
    offset, tail, path = 0, b"", None
    while True:
        if path is None:  # looked for until found, then read from where the last look stopped
            path = await anyio.to_thread.run_sync(
                partial(find_rollout, attempt.codex_home, state.thread_id or "")
            )
        if path is not None:
            found, offset, tail = await anyio.to_thread.run_sync(
                _token_count_since, path, offset, tail
            )
            if found:
                return
        await anyio.sleep(POLL_S)


def _token_count_since(path: Path, offset: int, tail: bytes) -> tuple[bool, int, bytes]:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return False, offset, tail
    seen = tail + data
    return _TOKEN_COUNT in seen, offset + len(data), seen[-len(_TOKEN_COUNT) :]


def _look_for_image(state: _State, codex_home: Path, final: bool = False) -> None:
    """Accept the first valid PNG in the thread's folder (the folder is this run's: its name is
    the thread id codex announced, so no clock needs comparing).

    A PNG that verifies (IEND last, every CRC) is complete, so it is taken at once: waiting for
    its size to settle cost a poll. While codex runs, a file whose last bytes are not IEND is
    still being written and is not read at all (reading a large file written in pieces on
    every poll would cost time squared); the ``final`` look reads whatever is there.
    """
    folder = codex_home / "generated_images" / (state.thread_id or "")
    try:
        candidates = sorted(folder.glob("*.png"))
    except OSError:
        return
    for path in candidates:
        try:
            stat = path.lstat()
        except OSError:
            continue
        if not S_ISREG(stat.st_mode):
            continue
        seen = (stat.st_size, stat.st_mtime_ns)
        if state.refused.get(path) == seen:
            continue
        if stat.st_size > MAX_IMAGE_BYTES:  # never read into memory: named, and left there
            state.invalid = f"it has {stat.st_size} bytes, more than the {MAX_IMAGE_BYTES} read"
            state.invalid_source, state.invalid_path, state.too_large = "file", path, True
            state.refused[path] = seen
            continue
        if not final and not _ends_with_iend(path, stat.st_size):
            continue
        try:
            data = path.read_bytes()
            info = inspect_png(data)
        except OSError:
            continue
        except PngError as exc:
            state.invalid, state.invalid_source, state.invalid_path = str(exc), "file", path
            state.refused[path] = seen
            continue
        state.image = (path, data, info)
        state.invalid = state.invalid_path = None
        return


_IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _ends_with_iend(path: Path, size: int) -> bool:
    if size < len(_IEND_CHUNK):
        return False
    try:
        with path.open("rb") as handle:
            handle.seek(size - len(_IEND_CHUNK))
            return handle.read(len(_IEND_CHUNK)) == _IEND_CHUNK
    except OSError:
        return False


def _rollout_records(attempt: Attempt, state: _State, *, keep_image: bool) -> list[ImageRecord]:
    """The image records of this thread's rollout (none when it is missing or unreadable).

    Best effort: the log explains, the image file proves; a log we cannot read (or a bug in
    reading it) must not cost an image that is already verified.
    """
    try:
        path = find_rollout(attempt.codex_home, state.thread_id) if state.thread_id else None
        if path is None:
            return []
        records, state.usage_limits = read_rollout(path, keep_image=keep_image)
        return records
    except OSError:
        return []
    except Exception as exc:
        log_unexpected(log, "the session log could not be read", exc)
        return []


def _rollout_image(
    attempt: Attempt, state: _State
) -> tuple[tuple[bytes, PngInfo] | None, ImageRecord] | None:
    """The image kept in the rollout (hosted tools, lost files), or the failed record."""
    records = _rollout_records(attempt, state, keep_image=True)
    for record in records:
        if record.status != "completed":
            continue
        # A saved file that failed verification says more than the log: its reason stays.
        if state.invalid is None:
            if record.invalid:
                state.invalid, state.invalid_source = record.invalid, "log"
            elif not record.image and not record.saved_path:
                state.invalid, state.invalid_source = "it holds no image data", "log"
        if record.image:
            try:
                return (record.image, inspect_png(record.image)), record
            except PngError as exc:
                if state.invalid_path is None:
                    state.invalid, state.invalid_source = str(exc), "log"
    # Only a call codex recorded as failed: a failure line alone may be the model's words.
    failed = [r for r in records if r.status == "failed"]
    if not failed:
        return None
    return None, next((r for r in reversed(failed) if r.failure), failed[-1])


def _revised_prompt(attempt: Attempt, state: _State, image: Path) -> str | None:
    """Best effort: the rollout may not be written yet when codex is stopped early.

    The image is already in hand: the rollout's copy of it (as base64) is skipped, not decoded.
    """
    for record in _rollout_records(attempt, state, keep_image=False):
        if record.revised_prompt and (record.id == image.stem or record.saved_path == str(image)):
            return record.revised_prompt
    return None


async def stop_codex(process: anyio.abc.Process, job: _proc.ProcessJob | None) -> None:
    """End codex and everything it started, then reap it and close its pipes."""
    try:
        if process.returncode is None:
            await anyio.to_thread.run_sync(_proc.kill_tree, process.pid)
        else:  # reaped by now: helpers codex left behind in its group (a table scan, if any)
            await anyio.to_thread.run_sync(_proc.kill_group, process.pid)
    finally:
        if job is not None:
            job.close()
    with anyio.move_on_after(5):
        await process.wait()
    if process.returncode is not None:  # reaped: the group id may be someone else's from now on
        WATCHDOG.forget(process.pid)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            await stream.aclose()
    if process.returncode is not None:
        _close_transport(process)


def _close_transport(process: anyio.abc.Process) -> None:
    """Close asyncio's transport of a reaped codex. A daemon codex double-forked (its own
    session: no group or tree kill reaches it) can hold codex's stdout, so the pipe never ends
    and asyncio keeps the transport open, to be closed by the garbage collector once the loop
    is gone: "Exception ignored ... Event loop is closed" after a good run. anyio exposes no
    handle for it, hence the private attributes (absent on another backend: nothing to do)."""
    transport = getattr(getattr(process, "_process", None), "_transport", None)
    close = getattr(transport, "close", None)
    if callable(close):
        close()


def _redacted(secrets: tuple[str, ...], text: str | None) -> str | None:
    return None if text is None else redact(text, secrets)


def _tail_text(buffer: bytearray) -> str:
    text = bytes(buffer[-STDERR_TAIL_BYTES:]).decode("utf-8", "replace")
    return "\n".join(text.strip().splitlines()[-20:])[-4000:]


def remove_codex_copy(path: Path) -> None:
    """Remove codex's copy of a delivered image, and its thread folder once empty."""
    try:
        path.unlink()
        path.parent.rmdir()
    except OSError:
        pass
