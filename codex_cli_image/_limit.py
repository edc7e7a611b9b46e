"""What a client shares between threads and event loops: the concurrency limit and the calls in
flight. Both poll a little rather than use one loop's primitives: a slot is held for tens of
seconds, so a few wake-ups a second cost nothing and need no cross-loop signalling."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable

import anyio

from .errors import InputError

__all__ = ["POLL_S", "Limit", "Runs"]

POLL_S = 0.05
"""How often a waiting call looks at the limit, and a run at whether the client closed."""


class Limit:
    """At most ``total`` images at once, first come first served, shared by every thread and
    event loop using the client (an anyio limiter belongs to one loop)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._lock = threading.Lock()
        self._busy = 0
        self._queue: deque[object] = deque()

    async def acquire(self, on_wait: Callable[[], None] | None = None) -> None:
        ticket = object()
        with self._lock:
            if self._busy < self.total and not self._queue:
                self._busy += 1
                return
            self._queue.append(ticket)
        try:
            if on_wait is not None:
                on_wait()
            while True:
                with self._lock:
                    if self._queue[0] is ticket and self._busy < self.total:
                        self._queue.popleft()
                        self._busy += 1
                        return
                await anyio.sleep(POLL_S)
        except BaseException:
            with self._lock:
                if ticket in self._queue:
                    self._queue.remove(ticket)
            raise

    def release(self) -> None:
        with self._lock:
            self._busy -= 1


class Runs:
    """The client's calls in flight, so that closing can end them and wait for their clean-up."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._threads: Counter[int] = Counter()  # calls in flight by the thread of their loop
        self.closing = False

    def enter(self) -> None:
        with self._changed:
            if self.closing:
                raise InputError(
                    "This Client is closed.",
                    reason="client_closed",
                    hint="Make a new Client, or keep this one open until its last call ends.",
                )
            self._threads[threading.get_ident()] += 1

    def exit(self) -> None:
        with self._changed:
            self._threads[threading.get_ident()] -= 1
            self._threads += Counter()  # drop the zeros
            self._changed.notify_all()

    def close(self) -> bool:
        """Stop new calls; True when this call closed it (the first)."""
        with self._changed:
            first, self.closing = not self.closing, True
            return first

    @property
    def idle(self) -> bool:
        with self._changed:
            return not self._threads

    @property
    def here(self) -> bool:
        """True when calls are in flight on this thread's loop: they cannot end while it blocks."""
        with self._changed:
            return threading.get_ident() in self._threads

    def wait_idle(self, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: not self._threads, timeout_s)

    async def cancel_on_close(self, scope: anyio.CancelScope) -> None:
        # Polled: close() may come from any thread, and an anyio.Event belongs to one loop.
        while not self.closing:  # noqa: ASYNC110
            await anyio.sleep(POLL_S)
        scope.cancel()
