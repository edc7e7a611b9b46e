"""Process-tree helpers shared by the version probe and the runner."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._watchdog import WATCHDOG
from .errors import TransientError

if TYPE_CHECKING:  # psutil loads only when a tree or a group must be ended: ~10 ms of start-up
    import psutil

log = logging.getLogger(__name__)

# How long a terminated tree gets to exit on its own before it is killed.
TERMINATE_GRACE_S = 2.0
_POLL_S = 0.02
_REAP_S = 1.0
# How often a run that may be told to stop looks at its stop event.
_STOP_POLL_S = 0.05


class Stopped(TransientError):
    """A bounded run was told to stop (its caller is being cancelled); its tree is gone.

    Part of the error tree, since public functions (probe_version, check_login) raise it."""

    def __init__(self) -> None:
        super().__init__(
            "Stopped before it finished: the caller asked to stop.",
            reason="stopped",
            hint="Run it again if it is still needed.",
        )


def new_group_kwargs() -> dict[str, Any]:
    """Popen keyword arguments that start the child as the leader of its own process group.

    A group (POSIX session, Windows process group) lets us signal codex and every helper it started
    without touching our own process.
    """
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


class ProcessJob:
    """On Windows, a Job Object holding codex and everything it starts; elsewhere a no-op.

    Windows has no process groups to signal, and a helper whose parent exited is no longer
    anyone's child, so neither psutil's tree nor a group finds it. A job does: every process
    started by a member joins it, and closing a job created with KILL_ON_JOB_CLOSE ends them
    all (also when our own process dies, since the handle closes with it).
    """

    def __init__(self) -> None:
        self._handle: int | None = None
        if sys.platform == "win32":
            self._handle = _win_create_job()
            if self._handle is None:
                log.debug("no job object: codex's helpers rely on the tree kill alone")

    def add(self, pid: int) -> None:
        """Put ``pid`` in the job (best effort: without a job the tree kill still runs)."""
        if self._handle is not None and not _win_assign(self._handle, pid):
            log.debug("codex (pid %d) could not join a job object", pid)

    def close(self) -> None:
        """End every process still in the job, and release it."""
        handle, self._handle = self._handle, None
        if handle is not None:
            _win_close_job(handle)


def _kernel32() -> Any:
    """kernel32 with the prototypes we call (handles are pointer-sized: never let ctypes pass
    them as C ints)."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    handle, dword = wintypes.HANDLE, wintypes.DWORD
    kernel32.CreateJobObjectW.restype = handle
    kernel32.CreateJobObjectW.argtypes = [wintypes.LPVOID, wintypes.LPCWSTR]
    kernel32.SetInformationJobObject.restype = wintypes.BOOL
    kernel32.SetInformationJobObject.argtypes = [handle, ctypes.c_int, wintypes.LPVOID, dword]
    kernel32.OpenProcess.restype = handle
    kernel32.OpenProcess.argtypes = [dword, wintypes.BOOL, dword]
    kernel32.AssignProcessToJobObject.restype = wintypes.BOOL
    kernel32.AssignProcessToJobObject.argtypes = [handle, handle]
    kernel32.TerminateJobObject.restype = wintypes.BOOL
    kernel32.TerminateJobObject.argtypes = [handle, wintypes.UINT]
    kernel32.CloseHandle.restype = wintypes.BOOL
    kernel32.CloseHandle.argtypes = [handle]
    return kernel32


def _win_create_job() -> int | None:
    import ctypes

    counters = ("read_ops", "write_ops", "other_ops", "read_bytes", "write_bytes", "other_bytes")

    class IoCounters(ctypes.Structure):
        _fields_ = [(name, ctypes.c_ulonglong) for name in counters]

    class BasicLimits(ctypes.Structure):  # JOBOBJECT_BASIC_LIMIT_INFORMATION
        _fields_ = [
            ("per_process_user_time", ctypes.c_int64),
            ("per_job_user_time", ctypes.c_int64),
            ("limit_flags", ctypes.c_uint32),
            ("minimum_working_set", ctypes.c_size_t),
            ("maximum_working_set", ctypes.c_size_t),
            ("active_process_limit", ctypes.c_uint32),
            ("affinity", ctypes.c_size_t),
            ("priority_class", ctypes.c_uint32),
            ("scheduling_class", ctypes.c_uint32),
        ]

    class ExtendedLimits(ctypes.Structure):  # JOBOBJECT_EXTENDED_LIMIT_INFORMATION
        _fields_ = [
            ("basic", BasicLimits),
            ("io", IoCounters),
            ("process_memory_limit", ctypes.c_size_t),
            ("job_memory_limit", ctypes.c_size_t),
            ("peak_process_memory_used", ctypes.c_size_t),
            ("peak_job_memory_used", ctypes.c_size_t),
        ]

    kernel32 = _kernel32()
    job = kernel32.CreateJobObjectW(None, None)
    if not job:
        return None
    limits = ExtendedLimits()
    limits.basic.limit_flags = 0x2000  # JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    extended_limit_information = 9  # JobObjectExtendedLimitInformation
    if not kernel32.SetInformationJobObject(
        job, extended_limit_information, ctypes.byref(limits), ctypes.sizeof(limits)
    ):
        kernel32.CloseHandle(job)
        return None
    return int(job)


def _win_assign(job: int, pid: int) -> bool:
    kernel32 = _kernel32()
    process_set_quota, process_terminate = 0x0100, 0x0001
    process = kernel32.OpenProcess(process_set_quota | process_terminate, False, pid)
    if not process:
        return False
    try:
        return bool(kernel32.AssignProcessToJobObject(job, process))
    finally:
        kernel32.CloseHandle(process)


def _win_close_job(job: int) -> None:
    kernel32 = _kernel32()
    kernel32.TerminateJobObject(job, 1)
    kernel32.CloseHandle(job)


@contextlib.contextmanager
def scratch_home(mirror: Path | None = None) -> Iterator[Path]:
    """A throwaway CODEX_HOME for a command that must not write into the user's.

    Every codex start, ``--version`` included, creates ``$CODEX_HOME/tmp/arg0-*`` (and the home
    itself) unless the home lies in the temporary folder, as this one does. ``mirror``: a home
    whose entries are linked in, so that codex reads its configuration (and the files it names)
    as there; new files land here and are discarded. Without symbolic links (Windows, by
    default) the mirror is not possible and ``mirror`` itself is yielded.
    """
    if mirror is not None and sys.platform == "win32":
        yield mirror
        return
    try:
        folder = Path(tempfile.mkdtemp(prefix="codex-image-home-"))
    except OSError as exc:  # not codex's fault: say where and why
        raise TransientError(
            f"Could not make a folder in {tempfile.gettempdir()}: {exc.strerror or exc}.",
            reason="temp_dir_unusable",
            hint="Free some space there, or point TMPDIR at a writable folder.",
        ) from exc
    try:
        entries: list[os.DirEntry[str]] = []
        if mirror is not None:
            with contextlib.suppress(OSError):  # an unreadable home: codex will say so
                entries = list(os.scandir(mirror))
        for entry in entries:
            if entry.name != "tmp":
                with contextlib.suppress(OSError):  # one odd entry must not hide the rest
                    (folder / entry.name).symlink_to(entry.path)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_bounded(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout_s: float,
    stop: threading.Event | None = None,
    scratch: str | None = None,
) -> tuple[int, bytes, bytes]:
    """Run a short command to completion: (exit code, stdout, stderr).

    The child leads its own process group. On timeout (``subprocess.TimeoutExpired``), Ctrl-C,
    ``stop`` being set from another thread (:class:`Stopped`) or any other exception its whole
    tree is killed and reaped before the exception propagates. Raises OSError when it cannot be
    started. ``scratch``: a temporary folder of the run, removed by the watchdog if we die.
    """
    WATCHDOG.start()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        **new_group_kwargs(),
    )
    WATCHDOG.watch(proc.pid, scratch)
    try:
        if stop is None:
            out, err = proc.communicate(timeout=timeout_s)
        else:
            out, err = _communicate_unless_stopped(proc, timeout_s, stop)
    except BaseException:
        kill_tree(proc.pid, grace_s=0)
        _reap(proc)
        raise
    finally:
        if proc.returncode is not None:
            WATCHDOG.forget(proc.pid)
    return proc.returncode, out, err


def _communicate_unless_stopped(
    proc: subprocess.Popen[bytes], timeout_s: float, stop: threading.Event
) -> tuple[bytes, bytes]:
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        try:
            # Retrying after a timeout loses no output (documented for communicate()).
            wait = min(_STOP_POLL_S, deadline - time.monotonic())
            return proc.communicate(timeout=max(0.0, wait))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(proc.args, timeout_s) from None
    raise Stopped


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Collect a killed child; a descendant that escaped the group may hold its pipes open."""
    try:
        proc.communicate(timeout=_REAP_S)
    except subprocess.TimeoutExpired:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()


def kill_tree(pid: int, *, grace_s: float = TERMINATE_GRACE_S) -> None:
    """Terminate ``pid`` and all its descendants; after ``grace_s`` kill whatever is left.

    ``pid`` must lead its own process group (see :func:`new_group_kwargs`). It is not reaped here:
    its owner (``Popen`` or an anyio process) waits for it and keeps the exit status. Descendants
    are listed before anything is signalled, because once their parent dies they are re-parented
    and cannot be found through it; the group signal reaches the ones re-parented earlier.
    """
    import psutil

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


def kill_group(pgid: int) -> None:
    """Kill what is left of an exited, reaped leader's process group (its helpers), POSIX only.

    No clock is needed to tell codex's helpers from strangers: a process group id is not reused
    while any member lives, so members of ``pgid`` are the leader's helpers unless the group
    emptied and the id was taken again, and then a live process has that id (the new leader):
    then nothing is done. Members are killed through psutil, which checks each one's identity.
    """
    if sys.platform == "win32":
        return
    try:
        os.killpg(pgid, 0)  # the usual case, codex left nothing: no process table to scan
    except ProcessLookupError:
        return
    except OSError:
        pass
    import psutil

    if psutil.pid_exists(pgid):
        return  # the id is someone else's now (our leader was reaped before this call)
    members = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid != pgid and os.getpgid(proc.pid) == pgid and _alive(proc):
                members.append(proc)  # (a new leader that appeared meanwhile is not a member)
    for proc in members:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone(members, 1.0)


def _signal_all(pgid: int, procs: list[psutil.Process], *, kill: bool) -> None:
    import psutil

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
    import psutil

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
    import psutil

    for proc in psutil.process_iter(["pid"]):
        # A process may exit between listing and asking: getpgid then raises OSError.
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and _alive(proc):
                return True
    return False
