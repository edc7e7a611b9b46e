"""Running async work from blocking code, and blocking work from async code, cancellably.

:func:`run_blocking` runs a call on its own event loop: right in the main thread of a POSIX
process that runs none (taking over the signals that act as Ctrl-C), else in a worker thread
(anyio's blocking portal), so it also works inside a thread that already runs a loop (notebooks,
async apps). Ctrl-C cancels the call and waits for its clean-up (codex's process trees ended,
temporary files removed) before ``KeyboardInterrupt`` propagates. :func:`stoppable` runs a
blocking step that may start a child in a worker thread, and tells it to stop when cancelled.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._interrupts import acting_as_ctrl_c
from .errors import TransientError

__all__ = ["run_blocking", "stoppable"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_WAKE_S = 0.25
_CLEANUP_WAIT_S = 30.0


async def stoppable(step: Callable[..., T]) -> T:
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
