"""``generate`` and ``agenerate``: one prompt in, one verified PNG out (or a sorted error).

The async function does the work; the sync one runs it on an event loop: right in the main
thread of a POSIX process that runs none, else in a worker thread (anyio's blocking portal), so
it also works inside a thread that already runs a loop (notebooks, async apps). Ctrl-C or
cancellation ends codex's whole process tree and removes every temporary file before the
exception propagates.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio

from ._interrupts import acting_as_ctrl_c
from .errors import InputError, TransientError
from .fit import fit_png, require_pillow
from .launcher import Codex, CodexVersion
from .output import Target, deliver, plan_output
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
from .runner import (
    Attempt,
    Phase,
    Produced,
    Progress,
    ProgressCallback,
    remove_codex_copy,
    run_attempt,
)

__all__ = ["FittedImage", "ImageResult", "Prepared", "RunOptions", "agenerate", "generate"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT_S = 600.0
# Retrying these could not help (or could pay twice): everything else transient is retried.
_NO_RETRY = frozenset({"timeout", "invalid_image", "network_blocked"})
_BACKOFF_S = 2.0
_WAKE_S = 0.25
_CLEANUP_WAIT_S = 30.0


@dataclass(frozen=True, slots=True)
class FittedImage:
    """The exact-size copy made by ``fit`` (the original is kept)."""

    path: Path
    width: int
    height: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class ImageResult:
    """A delivered image and how it was made."""

    path: Path
    bytes: int
    sha256: str
    width: int
    height: int
    format: str
    thread_id: str
    codex_version: str | None
    elapsed_s: float
    usage: dict[str, int] | None
    revised_prompt: str | None
    attempts: int
    warnings: tuple[str, ...]
    image_source: str
    """``file`` (codex saved it) or ``rollout`` (decoded from the session log)."""
    has_alpha: bool = False
    requested: Geometry = Geometry()
    geometry_mismatch: bool = False
    """The delivered aspect is off the requested one (backends may ignore sizes)."""
    fitted: FittedImage | None = None
    """The exact-size copy asked for with ``fit`` (beside the original)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "path": str(self.path),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "thread_id": self.thread_id,
            "codex_version": self.codex_version,
            "elapsed_s": round(self.elapsed_s, 3),
            "usage": self.usage,
            "revised_prompt": self.revised_prompt,
            "attempts": self.attempts,
            "warnings": list(self.warnings),
            "image_source": self.image_source,
            "has_alpha": self.has_alpha,
            "requested": self.requested.to_dict(),
            "geometry_mismatch": self.geometry_mismatch,
            "fitted": self.fitted.to_dict() if self.fitted else None,
        }


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the preflight established for one image: codex, its version, its home, the login."""

    codex: Codex
    version: CodexVersion
    home: Path
    verdict: Verdict
    skip_features: tuple[str, ...] = ()
    """Features to ``--disable``: start-up work an image does not need."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How each image is made: the settings a :class:`~codex_cli_image.Client` holds."""

    timeout: float = DEFAULT_TIMEOUT_S
    retries: int = 1
    model: str | None = None
    wait_for_turn: bool = False
    keep_codex_copy: bool = False
    profile: str | None = None


Preflight = Callable[[float], Awaitable[Prepared]]
"""Given the call's deadline (``time.monotonic()``), the checked codex and login."""


async def agenerate(
    prompt: str,
    *,
    output: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    # One deadline for the whole call, retries included, ending in a classified error after
    # clean-up: more than a caller's fail_after() could give.
    timeout: float = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109
    retries: int = 1,
    codex: str | os.PathLike[str] | None = None,
    codex_home: str | os.PathLike[str] | None = None,
    model: str | None = None,
    allow_relay: bool = False,
    on_progress: ProgressCallback | None = None,
    wait_for_turn: bool = False,
    keep_codex_copy: bool = False,
    references: Sequence[str | os.PathLike[str]] = (),
    aspect: str | None = None,
    size: str | None = None,
    transparent: bool = False,
    fit: str | None = None,
    env: Mapping[str, str] | None = None,
    profile: str | None = None,
) -> ImageResult:
    """Make one image with the signed-in Codex CLI and deliver it as a verified PNG.

    prompt: what to draw. output: a .png path or a directory (default: the current directory);
    never overwritten unless ``overwrite``. timeout: seconds for the whole call, retries
    included. retries: extra attempts after transient failures (never after a timeout or when an
    image was produced). codex / codex_home: the executable and its state directory (default:
    found as ``codex-image doctor`` shows). model: passed to codex. allow_relay: accept a custom
    provider that receives the ChatGPT login. on_progress: called with each :class:`Progress`.
    wait_for_turn: let codex finish its closing message (to get ``usage``) instead of stopping
    it once the image is safe. keep_codex_copy: leave codex's own copy in
    ``$CODEX_HOME/generated_images``. references: up to 5 PNG, JPEG, GIF or WebP images to
    start from. aspect (``square``, ``landscape``, ``portrait`` or ``W:H``), size (``WxH``) and
    transparent are asked of the model; the result reports what was delivered. fit (``WxH``,
    needs Pillow: the ``fit`` extra) also writes an exact-size copy beside the image
    (cover-crop, then resize; ``result.fitted``), and asks for that aspect when neither aspect
    nor size is given. profile: the codex profile to run with (``--profile``; codex 0.142+
    reads ``$CODEX_HOME/<profile>.config.toml``), checked like the main configuration.

    A throwaway :class:`~codex_cli_image.Client`: for many images, keep one.
    Raises :class:`~codex_cli_image.CodexImageError` (input, launch, auth, quota, transient).
    """
    from .client import Client  # the client is built on this module

    request = ImageRequest(prompt, output, references, aspect, size, transparent, fit, overwrite)
    request.check()
    async with Client(
        codex=codex, codex_home=codex_home, profile=profile, model=model,
        allow_relay=allow_relay, env=env, timeout=timeout, retries=retries,
        wait_for_turn=wait_for_turn, keep_codex_copy=keep_codex_copy,
    ) as client:  # fmt: skip
        return await client.agenerate(request, on_progress=on_progress)


async def make_image(
    request: ImageRequest,
    preflight: Preflight,
    options: RunOptions,
    on_progress: ProgressCallback | None = None,
    started: float | None = None,
) -> ImageResult:
    """The work of one image, for a :class:`~codex_cli_image.Client`: check what is asked,
    preflight (``preflight``), run codex with retries, deliver, verify. ``started``: when the
    call began (``time.monotonic()``; default now): the timeout counts from it."""
    started = time.monotonic() if started is None else started
    request.check()
    check_options(timeout=options.timeout, retries=options.retries, model=options.model)
    deadline = started + options.timeout
    fit_size = parse_size(request.fit) if request.fit else None
    aspect = request.aspect
    if fit_size is not None:
        await anyio.to_thread.run_sync(require_pillow)
        if not (aspect or request.size):
            aspect = f"{fit_size[0]}:{fit_size[1]}"
    geometry = Geometry(
        aspect=parse_aspect(aspect) if aspect else None,
        size=parse_size(request.size) if request.size else None,
        transparent=request.transparent,
    )
    checked = await anyio.to_thread.run_sync(check_references, list(request.references))
    target = plan_output(request.output, request.prompt, overwrite=request.overwrite)

    def emit(phase: Phase, message: str | None, thread_id: str | None, attempt: int = 1) -> None:
        if on_progress is None:
            return
        try:
            on_progress(Progress(phase, time.monotonic() - started, attempt, message, thread_id))
        except Exception:  # a broken callback must not break the run or its clean-up
            log.exception("on_progress callback failed")

    emit("started", None, None)
    ready = await preflight(deadline)
    ready.verdict.raise_for_problem()
    warnings = [notice.message for notice in ready.verdict.warnings]
    version = str(ready.version)
    instruction = build_instruction(request.prompt, geometry, reference_names(checked))
    produced, attempts = await _attempts(
        instruction, ready, options, deadline, tuple(checked), emit
    )

    try:
        path, delivered_warnings = await anyio.to_thread.run_sync(deliver, produced.data, target)
    except OSError as exc:
        kept = f" codex's copy is kept at {produced.codex_file}." if produced.codex_file else ""
        raise InputError(
            f"Could not write the image to {target.path}: {exc.strerror or exc}.{kept}",
            reason="output_write_failed",
            hint=_delivery_hint(exc, kept=produced.codex_file is not None),
            thread_id=produced.thread_id,
            codex_version=version,
        ) from exc
    if produced.codex_file is not None and not options.keep_codex_copy:
        remove_codex_copy(produced.codex_file)
    fitted = None
    if fit_size is not None:
        try:
            fitted = await anyio.to_thread.run_sync(
                _fit_beside, produced.data, path, fit_size, request.overwrite
            )
        except Exception as exc:  # the image is delivered and paid for: never lose it over this
            log.warning("the fitted copy failed", exc_info=exc)
            warnings.append(
                f"The {fit_size[0]}x{fit_size[1]} copy could not be made "
                f"({getattr(exc, 'strerror', None) or exc}); the image itself is saved."
            )
    mismatch, geometry_warnings = compare_geometry(geometry, produced.info)
    result = ImageResult(
        path=path,
        bytes=len(produced.data),
        sha256=hashlib.sha256(produced.data).hexdigest(),
        width=produced.info.width,
        height=produced.info.height,
        format="png",
        thread_id=produced.thread_id,
        codex_version=version,
        elapsed_s=time.monotonic() - started,
        usage=produced.usage,
        revised_prompt=produced.revised_prompt,
        attempts=attempts,
        warnings=tuple(warnings + geometry_warnings + delivered_warnings),
        image_source=produced.source,
        has_alpha=produced.info.has_alpha,
        requested=geometry,
        geometry_mismatch=mismatch,
        fitted=fitted,
    )
    emit("finished", str(path), produced.thread_id, attempts)
    return result


async def _attempts(
    instruction: str,
    ready: Prepared,
    options: RunOptions,
    deadline: float,
    references: tuple[Reference, ...],
    emit: Callable[[Phase, str | None, str | None, int], None],
) -> tuple[Produced, int]:
    """Run codex until an image is produced: retried after transient failures that a retry can
    help, with backoff, within the deadline. Returns the image and the number of attempts."""
    version = str(ready.version)
    attempt_no = 0
    while True:
        if time.monotonic() >= deadline:
            raise TransientError(
                f"No time was left to run codex within {options.timeout:g} s.",
                reason="timeout",
                hint="Allow more time (--timeout).",
                codex_version=version,
            )
        attempt_no += 1
        attempt = Attempt(
            codex=ready.codex,
            codex_home=ready.home,
            instruction=instruction,
            deadline=deadline,
            timeout_s=options.timeout,
            model=options.model,
            profile=options.profile,
            disable=ready.skip_features,
            wait_for_turn=options.wait_for_turn,
            codex_version=version,
            emit=_numbered(emit, attempt_no),
            references=references,
        )
        try:
            candidate = await run_attempt(attempt)
            _refuse_copied_reference(candidate, list(references), version)
            return candidate, attempt_no
        except TransientError as error:
            pause = _BACKOFF_S * 2 ** (attempt_no - 1) + random.uniform(0, 1)
            if (
                error.reason in _NO_RETRY
                or attempt_no > options.retries
                or time.monotonic() + pause >= deadline
            ):
                raise
            emit("retrying", f"{error.reason}: {error.message}", error.thread_id, attempt_no)
            await anyio.sleep(pause)


def check_options(*, timeout: float, retries: int, model: str | None) -> None:
    """The per-call options every image shares; :class:`InputError` naming a bad one."""
    if isinstance(timeout, bool) or not (isinstance(timeout, (int, float)) and timeout > 0):
        raise InputError(
            "The timeout must be a positive number of seconds.",
            reason="invalid_timeout",
            hint="Pass a timeout in seconds, e.g. 600.",
        )
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InputError(
            "retries must be a whole number, 0 or more.",
            reason="invalid_retries",
            hint="Pass 0 or more.",
        )
    if model is not None and (not model.strip() or "\x00" in model or len(model) > 200):
        raise InputError(
            f"The model name {model[:40]!r} is not usable.",
            reason="invalid_model",
            hint="Pass a model name such as the one in your config.toml, or leave it out.",
        )


def _fit_beside(data: bytes, original: Path, size: tuple[int, int], overwrite: bool) -> FittedImage:
    """Write the exact-size copy next to ``original`` (replacing only with ``overwrite``)."""
    fitted = fit_png(data, size)
    name = original.with_name(f"{original.stem}-{size[0]}x{size[1]}.png")
    path, _ = deliver(fitted, Target(name, overwrite=overwrite, named_by_us=True))
    info = inspect_png(fitted)
    return FittedImage(path, info.width, info.height, len(fitted),
                       hashlib.sha256(fitted).hexdigest())  # fmt: skip


async def _stoppable(step: Callable[..., T]) -> T:
    """Run a blocking preflight step (it may run ``codex --version`` or ``codex login status``)
    in a worker thread, and stop it when cancelled.

    A worker thread cannot be cancelled: waiting for it would hold Ctrl-C for up to the step's
    own limit, and abandoning it would leave its child running. So it is told to stop (it ends
    its child's tree) and waited for under a shield.
    """
    stop, started, done = threading.Event(), threading.Event(), threading.Event()
    gate = threading.Lock()

    def run() -> T:
        with gate:  # cancelled first: the step never starts, so nobody waits for it
            if stop.is_set():
                raise TransientError("Stopped.", reason="stopped", hint="Retry.")
            started.set()
        try:
            return step(stop=stop)
        finally:
            done.set()

    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        with gate:
            stop.set()
        if started.is_set():  # anyio skips a call cancelled before its thread took it
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(done.wait, _CLEANUP_WAIT_S)
        raise


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


def _refuse_copied_reference(produced: Produced, references: list[Reference], version: str) -> None:
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


def _numbered(
    emit: Callable[[Phase, str | None, str | None, int], None], attempt: int
) -> Callable[[Phase, str | None, str | None], None]:
    def forward(phase: Phase, message: str | None, thread_id: str | None) -> None:
        emit(phase, message, thread_id, attempt)

    return forward


def generate(
    prompt: str,
    *,
    output: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = 1,
    codex: str | os.PathLike[str] | None = None,
    codex_home: str | os.PathLike[str] | None = None,
    model: str | None = None,
    allow_relay: bool = False,
    on_progress: ProgressCallback | None = None,
    wait_for_turn: bool = False,
    keep_codex_copy: bool = False,
    references: Sequence[str | os.PathLike[str]] = (),
    aspect: str | None = None,
    size: str | None = None,
    transparent: bool = False,
    fit: str | None = None,
    env: Mapping[str, str] | None = None,
    profile: str | None = None,
) -> ImageResult:
    """The blocking twin of :func:`agenerate`: same arguments, same result, same errors.

    Runs on its own event loop (see :func:`run_blocking`), so it is safe from any thread,
    including one that already runs an event loop. Ctrl-C cancels the run and ends codex's
    process tree before ``KeyboardInterrupt`` propagates. ``on_progress`` is called from the
    thread that runs the loop (this one, or a worker thread).
    """
    from .client import Client

    request = ImageRequest(prompt, output, references, aspect, size, transparent, fit, overwrite)
    request.check()  # before a worker thread and an event loop start
    with Client(
        codex=codex, codex_home=codex_home, profile=profile, model=model,
        allow_relay=allow_relay, env=env, timeout=timeout, retries=retries,
        wait_for_turn=wait_for_turn, keep_codex_copy=keep_codex_copy,
    ) as client:  # fmt: skip
        return client.generate(request, on_progress=on_progress)


def run_blocking(call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` on its own event loop; Ctrl-C cancels it and waits for its clean-up (codex's
    process trees ended, temporary files removed) before ``KeyboardInterrupt`` propagates.

    In the main thread of a POSIX process with no event loop running, the loop runs right here
    and takes over the signals that would raise KeyboardInterrupt anyway (SIGINT, and those a
    command line handles with :func:`~codex_cli_image._interrupts.interrupt`): a signal then
    cancels the call cleanly. Elsewhere (other threads, a running loop, Windows) it runs in a
    worker thread through anyio's blocking portal, and Ctrl-C is caught while waiting for it.
    """
    signums = acting_as_ctrl_c()
    if signums and not _in_async_context():
        return _run_here(call, signums)
    return _run_in_worker(call)


def _in_async_context() -> bool:
    """True inside a running asyncio or trio loop (its signal handling must not be touched)."""
    import asyncio

    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
        return True
    except RuntimeError:
        return False


class _Handlers:
    """The signal handlers and wakeup fd the event loop replaces, to put back once it is done.

    Put back with the signals blocked and SIGINT last: a signal arriving meanwhile is taken by
    the restored handler (after the others are in place), never by the system default."""

    def __init__(self, signums: tuple[signal.Signals, ...]) -> None:
        self.signums = signums
        self.handlers = {signum: signal.getsignal(signum) for signum in signums}
        self.wakeup_fd = signal.set_wakeup_fd(-1)  # a host's (a GUI toolkit's), if any
        signal.set_wakeup_fd(self.wakeup_fd)

    def restore(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, self.signums)
        try:
            signal.set_wakeup_fd(self.wakeup_fd)
            for signum in sorted(self.handlers, key=lambda s: s == signal.SIGINT):
                signal.signal(signum, self.handlers[signum])
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signums)


def _run_here(call: Callable[[], Awaitable[T]], signums: tuple[signal.Signals, ...]) -> T:
    handlers = _Handlers(signums)
    try:
        return anyio.run(_interruptible, call, handlers)
    finally:
        handlers.restore()  # again, in case the loop failed before the coroutine restored them


async def _interruptible(call: Callable[[], Awaitable[T]], handlers: _Handlers) -> T:
    """``call()``, cancelled by the first of the signals; then KeyboardInterrupt, once the
    call's clean-up is done. The signals are received until then: later ones are only logged,
    never left to a default that would kill the process mid-clean-up."""
    interrupted = False
    work = anyio.CancelScope()
    done: list[T] = []
    failure: Exception | None = None
    try:
        with anyio.open_signal_receiver(*handlers.signums) as received:

            async def watch() -> None:
                nonlocal interrupted
                async for _ in received:
                    if interrupted:
                        log.warning("still stopping codex; it will be gone in a moment")
                    else:
                        interrupted = True
                        work.cancel()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(watch)
                try:
                    with work:
                        done.append(await call())
                except Exception as exc:  # as itself: out of the task group it would be grouped
                    failure = exc
                finally:
                    tasks.cancel_scope.cancel()  # the call and its clean-up are over
    finally:
        handlers.restore()  # at once: leaving the receiver set them to the system's defaults
    if interrupted:  # whatever the call made of its cancellation, the user stopped it
        raise KeyboardInterrupt from None
    if failure is not None:
        raise failure
    return done[0]


def _run_in_worker(call: Callable[[], Awaitable[T]]) -> T:
    from anyio.from_thread import start_blocking_portal  # not needed on the main-thread path

    finished = threading.Event()

    async def tracked() -> T:
        try:
            return await call()
        finally:
            finished.set()

    with start_blocking_portal() as portal:
        future = portal.start_task_soon(tracked)
        try:
            while True:
                # Short waits keep Ctrl-C responsive (a lock wait without a timeout is not
                # interruptible on Windows).
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    return future.result(timeout=_WAKE_S)
        except KeyboardInterrupt:
            future.cancel()
            _wait_out_cleanup(finished)
            raise


def _wait_out_cleanup(finished: threading.Event) -> None:
    """Let the cancelled run end codex's tree and remove its files, whatever more Ctrl-Cs come.

    The clean-up is bounded (terminate, a grace period, kill, reap); returning early would let
    the interpreter exit with codex still running in its own session.
    """
    deadline = time.monotonic() + _CLEANUP_WAIT_S
    while not finished.is_set() and time.monotonic() < deadline:
        try:
            finished.wait(_WAKE_S)
        except KeyboardInterrupt:
            log.warning("still stopping codex; interrupt again in a moment to abandon it")
