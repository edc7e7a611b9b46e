"""Process-tree helpers shared by the version probe and the runner."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil

# How long a terminated tree gets to exit on its own before it is killed.
TERMINATE_GRACE_S = 2.0
_POLL_S = 0.02


def new_group_kwargs() -> dict[str, Any]:
    """Popen keyword arguments that start the child as the leader of its own process group.

    A group (POSIX session, Windows process group) lets us signal codex and every helper it started
    without touching our own process.
    """
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def kill_tree(pid: int, *, grace_s: float = TERMINATE_GRACE_S) -> None:
    """Terminate ``pid`` and all its descendants; after ``grace_s`` kill whatever is left.

    ``pid`` must lead its own process group (see :func:`new_group_kwargs`). It is not reaped here:
    its owner (``Popen`` or an anyio process) waits for it and keeps the exit status. Descendants
    are listed before anything is signalled, because once their parent dies they are re-parented
    and cannot be found through it; the group signal reaches the ones re-parented earlier.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = []
    if grace_s > 0:
        _signal_all(pid, procs, kill=False)
        procs = _wait_gone(procs, grace_s)
        if not procs and not _group_alive(pid):
            return
    _signal_all(pid, procs, kill=True)
    _wait_gone(procs, 1.0)


def _signal_all(pgid: int, procs: list[psutil.Process], *, kill: bool) -> None:
    if sys.platform != "win32":
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL if kill else signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if kill:
                proc.kill()
            else:
                proc.terminate()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Poll until every process has exited (zombies count as gone); return the survivors."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        alive = [p for p in alive if _alive(p)]
    return alive


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) member of the POSIX process group remains."""
    if sys.platform == "win32":
        return False
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(proc.pid) == pgid and _alive(proc):
                return True
    return False
