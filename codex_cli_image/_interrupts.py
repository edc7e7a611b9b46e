"""Signals that act as Ctrl-C. Standard library only: the command line installs the handler
before it knows which command runs."""

from __future__ import annotations

import signal
import sys
import threading


def interrupt(signum: int, frame: object) -> None:
    """A handler that makes a signal act as Ctrl-C (the command line's, for SIGTERM, SIGHUP)."""
    raise KeyboardInterrupt


def acting_as_ctrl_c() -> tuple[signal.Signals, ...]:
    """The signals whose handler now raises KeyboardInterrupt, when an event loop may take them
    over in this thread (POSIX, main thread): SIGINT unless ignored or handled by the host,
    and those handled by :func:`interrupt`. Empty elsewhere."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        return ()
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    signums: list[signal.Signals] = [getattr(signal, n) for n in names if hasattr(signal, n)]
    return tuple(
        signum
        for signum in signums
        if signal.getsignal(signum) in (signal.default_int_handler, interrupt)
    )
