"""What ``serve`` checks before a request reaches a route: the connection, the Host, the token.

uvicorn waits forever for a request's headers, and one file descriptor a connection: a thousand
connections that send half their headers (no token needed) used every descriptor, so nobody else
got in. :class:`GatedH11Protocol` gives every connection :data:`HEADER_TIMEOUT_S` to finish its
request's headers, and keeps at most :data:`MAX_WAITING` connections that have not: the oldest
is closed for a new one, so a client that sends its request at once always gets through.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import stat
import sys
import time
from collections import OrderedDict
from pathlib import Path

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "HEADER_TIMEOUT_S",
    "MAX_WAITING",
    "GatedH11Protocol",
    "RateLimitedLog",
    "check_token_file",
    "host_name",
    "raise_fd_limit",
    "sign_url",
    "signed_url_ok",
    "token_file_problem",
]

HEADER_TIMEOUT_S = 10.0
"""How long a connection may take to send a request's headers (the first, or the next one)."""
MAX_WAITING = 256
"""Connections still sending their headers; beyond it the oldest is closed."""

_HOST = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.%]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?"
)


def host_name(header: str) -> str | None:
    """The host a ``Host`` header names, lower case (an IPv6 address without brackets), or None
    when the header is not exactly ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``
    (``[::1]evil.com`` is none of them)."""
    match = _HOST.fullmatch(header.strip())
    if match is None:
        return None
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"].split("%")[0])
        except ValueError:
            return None
        return match["v6"].lower()
    return match["name"].lower()


def sign_url(key: bytes, name: str, expires: int) -> str:
    """The signature of an image URL: its file name and expiry (Unix seconds), under the
    server's key (made anew at each start)."""
    return hmac.new(key, f"{name}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def signed_url_ok(key: bytes, name: str, expires: str, signature: str, now: float) -> bool:
    """Whether an image URL is one this server signed and still valid: the name, the expiry
    and the signature must all be as signed, and the expiry not passed."""
    if not expires.isdigit() or len(expires) > 12 or int(expires) <= now:
        return False
    return hmac.compare_digest(sign_url(key, name, int(expires)), signature)


def token_file_problem(path: Path, mode: int, owner: int | None, uid: int | None) -> str | None:
    """Why a token file may not be used (pure: its ``lstat`` mode and owner, our uid), as ssh
    judges a private key: not a regular file (a symlink too), readable or writable by group or
    others, or owned by another user. None on Windows-like systems (no uid) for the owner."""
    if stat.S_ISLNK(mode):
        return f"{path} is a symbolic link: name the file itself"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file"
    if mode & 0o077:
        return (
            f"{path} has mode {stat.S_IMODE(mode):04o}: group or others can read it "
            f"(run `chmod 600 {path}`)"
        )
    if owner is not None and uid is not None and owner != uid:
        return f"{path} belongs to another user (uid {owner})"
    return None


def check_token_file(path: Path) -> str | None:
    """:func:`token_file_problem` for the file at ``path`` (POSIX; Windows has no such modes)."""
    if sys.platform == "win32":
        return None
    info = path.lstat()
    return token_file_problem(path, info.st_mode, info.st_uid, os.getuid())


def raise_fd_limit() -> None:
    """Let the server open as many descriptors as the system allows this user (the soft limit
    is often 1024, the hard one far more): connections must not run out first."""
    try:
        import resource
    except ImportError:  # Windows
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = max(soft, 65536)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass


class RateLimitedLog(logging.Filter):
    """At most ``per_minute`` records a minute from a logger, then one line saying how many were
    dropped: a flood of refused connections must not fill the disk with log lines."""

    def __init__(self, per_minute: int = 60) -> None:
        super().__init__()
        self.per_minute = per_minute
        self._window = 0.0
        self._count = 0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._window >= 60:
            if self._dropped:
                record.msg = f"({self._dropped} similar lines dropped) {record.msg}"
            self._window, self._count, self._dropped = now, 0, 0
        self._count += 1
        if self._count > self.per_minute:
            self._dropped += 1
            return False
        return True


_waiting: OrderedDict[GatedH11Protocol, None] = OrderedDict()


class GatedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a bound on connections waiting for one."""

    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()
        while len(_waiting) > MAX_WAITING:
            oldest, _ = _waiting.popitem(last=False)
            oldest._give_up()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # still sending (the next) request's headers
            self._wait_for_headers()
        else:
            self._done_waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        self._done_waiting()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._wait_for_headers()  # the next request on this connection gets the same time

    def _wait_for_headers(self) -> None:
        _waiting[self] = None
        if self._timer is None:
            self._timer = self.loop.call_later(HEADER_TIMEOUT_S, self._give_up)

    def _done_waiting(self) -> None:
        _waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _give_up(self) -> None:
        self._done_waiting()
        if self.conn.their_state is h11.IDLE:  # no request's headers came in time
            self.transport.close()
