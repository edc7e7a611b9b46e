"""End codex's process trees when the process that started them dies, however it dies.

Our own stop (SIGTERM to codex's group, then SIGKILL, then reaping) runs only while we can run:
not after SIGKILL, the OOM killer or a crash; and codex leads its own session, so nothing else
ends it (on a backend that hangs it retries for ever). So a host process starts, before its
first codex, one small watchdog that reads a pipe only we write to. We tell it each codex group
we start and each one we have ended; the kernel closes our end of the pipe when we die, and on
that end of file the watchdog ends every group still listed (SIGTERM, up to a second's grace,
SIGKILL) and exits. It costs one ``/bin/sh`` per host process (about 2 MB), not one per image.

Why this shape: PR_SET_PDEATHSIG is Linux only and fires when the *thread* that forked exits
(anyio starts codex from worker and portal threads, which come and go), and kqueue's NOTE_EXIT is
macOS only; a pipe's end of file means the same on both. It is a shell, not ``sys.executable``:
that may be a host application that embeds Python. Windows needs none of it: codex's Job Object
is created with KILL_ON_JOB_CLOSE, and the kernel closes our handle to it when we die.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading

__all__ = ["WATCHDOG", "Watchdog"]

log = logging.getLogger(__name__)

# Reads "watch PGID [FOLDER]", "forget PGID", "file KEY PATH" and "drop KEY" lines until end of
# file, then removes every file still listed (an image half-written into the user's folder, or
# a server's private folder), ends every group still listed and removes its folder (codex's
# private workspace, which only we would remove). Nothing in the loop forks (builtins only), so
# it never has a child while we live. Paths come escaped (\0ooo for every byte outside
# [A-Za-z0-9/._-]), are kept in variables named after the (checked, numeric) key, assigned by
# eval but never expanded by it, and are unescaped by printf %b only once we are gone. It
# ignores a terminal's Ctrl-C and hang-up, and SIGTERM: it must outlive us, not die with us.
_SCRIPT = """\
trap '' INT HUP TERM PIPE QUIT
groups=
files=
while read -r verb group folder; do
  case $group in ''|*[!0-9]*) continue ;; esac
  case $verb in
    watch) groups="$groups $group"; eval "folder_$group=\\$folder" ;;
    forget) kept=
            for g in $groups; do [ "$g" = "$group" ] || kept="$kept $g"; done
            groups=$kept; unset "folder_$group" ;;
    file) files="$files $group"; eval "file_$group=\\$folder" ;;
    drop) kept=
          for f in $files; do [ "$f" = "$group" ] || kept="$kept $f"; done
          files=$kept; unset "file_$group" ;;
  esac
done
for f in $files; do
  eval "path=\\${file_$f-}"
  [ -n "$path" ] && rm -rf -- "$(printf '%b' "$path")"
done
[ -n "$groups" ] || exit 0
for g in $groups; do kill -s TERM -- "-$g" 2>/dev/null; done
n=0
while [ $n -lt 20 ]; do
  alive=
  for g in $groups; do kill -s 0 -- "-$g" 2>/dev/null && alive=1; done
  [ -n "$alive" ] || break
  sleep 0.05; n=$((n + 1))
done
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
for g in $groups; do
  eval "folder=\\${folder_$g-}"
  [ -n "$folder" ] && rm -rf -- "$(printf '%b' "$folder")"
done
exit 0
"""
_SHELL = "/bin/sh"


class Watchdog:
    """``start()`` before a codex group is started, ``watch(pgid)`` once it runs,
    ``forget(pgid)`` once it is ended and reaped. Thread-safe; a no-op on Windows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipe: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._files = 0

    @property
    def pid(self) -> int | None:
        """The watchdog's process id, once started (tests tell it from a leaked process)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        """Make sure a watchdog runs (the first call starts it: about a millisecond)."""
        if sys.platform == "win32":
            return
        with self._lock:
            if self._pipe is None or self._process is None or self._process.poll() is not None:
                self._spawn()

    def watch(self, pgid: int, folder: str | None = None) -> None:
        """Watch ``pgid``; ``folder`` (our temporary workspace for it) goes too if we die."""
        self.start()
        escaped = _escape(folder) if folder is not None else None
        self._send(f"watch {pgid} {escaped}\n" if escaped else f"watch {pgid}\n")

    def forget(self, pgid: int) -> None:
        self._send(f"forget {pgid}\n")

    def track_file(self, path: str | os.PathLike[str]) -> int | None:
        """Remove ``path`` if we die before :meth:`drop` (a file being written into the user's
        folder, or a folder of our own, whole); the key to drop it with, or None when it cannot
        be watched."""
        escaped = _escape(path)
        if escaped is None or sys.platform == "win32":
            return None
        self.start()
        with self._lock:
            self._files += 1
            key = self._files
        self._send(f"file {key} {escaped}\n")
        return key

    def drop(self, key: int | None) -> None:
        if key is not None:
            self._send(f"drop {key}\n")

    def _send(self, line: str) -> None:
        with self._lock:
            if self._pipe is None:
                return
            try:
                os.write(self._pipe, line.encode("ascii"))
            except OSError as exc:  # killed by hand: the next start() makes another
                log.warning("the codex watchdog is gone (%s)", exc)
                self._close()

    def _spawn(self) -> None:
        self._close()
        read, write = os.pipe()  # not inheritable: codex and its helpers get neither end
        try:
            self._process = subprocess.Popen(
                [_SHELL, "-c", _SCRIPT],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env={"PATH": "/usr/bin:/bin"},
                start_new_session=True,  # a terminal's signals to our group do not reach it
            )
        except OSError as exc:
            os.close(write)
            log.warning("no codex watchdog (%s): codex would outlive a killed caller", exc)
            return
        finally:
            os.close(read)
        self._pipe = write

    def _close(self) -> None:
        if self._pipe is not None:
            try:
                os.close(self._pipe)
            except OSError:
                pass
            self._pipe = None
        if self._process is not None:
            self._process.poll()
            self._process = None

    def _after_fork(self) -> None:
        """In a forked child: the pipe is the parent's (holding it open would keep the parent's
        watchdog from noticing the parent's death); this process starts its own if it needs one."""
        self._lock = threading.Lock()
        if self._pipe is not None:
            try:
                os.close(self._pipe)
            except OSError:
                pass
        self._pipe, self._process = None, None

    def shutdown(self) -> None:
        """At exit: close our end (the watchdog ends what is left and exits) and reap it."""
        with self._lock:
            process = self._process
            self._close()
        if process is not None:
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-")


def _escape(path: str | os.PathLike[str]) -> str | None:
    """``path`` as one line of ASCII for the watchdog (printf %b escapes); None for a path it
    must not be trusted with (empty, or a newline that command substitution would cut)."""
    raw = os.fsencode(path)
    if not raw.strip() or b"\n" in raw or b"\r" in raw:
        return None
    return "".join(chr(b) if b in _SAFE else f"\\0{b:03o}" for b in raw)


WATCHDOG = Watchdog()
atexit.register(WATCHDOG.shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=WATCHDOG._after_fork)
