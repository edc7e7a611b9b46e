"""What ``serve`` checks before a request reaches a route: the connection, the Host, the Origin,
the token, the body size; and a line of log per request.

uvicorn waits forever for a request's headers, and one file descriptor a connection: a thousand
connections that send half their headers (no token needed) used every descriptor, so nobody else
got in. :class:`GatedH11Protocol` gives every connection :data:`HEADER_TIMEOUT_S` to finish its
request's headers, and keeps at most :data:`MAX_WAITING` connections that have not: the oldest
is closed for a new one, so a client that sends its request at once always gets through.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import re
import stat
import sys
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import h11
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .options import BODY_TIMEOUT_S, LOOPBACK_NAMES, MAX_EDIT_BYTES, MAX_JSON_BYTES, ServeOptions
from .responses import refused_response, too_large

if TYPE_CHECKING:
    from .service import Service

__all__ = [
    "HEADER_TIMEOUT_S",
    "MAX_WAITING",
    "GatedH11Protocol",
    "RateLimitedLog",
    "Gate",
    "check_token_file",
    "host_allowed",
    "host_name",
    "raise_fd_limit",
    "token_file_problem",
    "token_ok",
]

access_log = logging.getLogger("codex_cli_image.serve.access")

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
    """At most ``per_minute`` records a minute from a logger, each one line (asyncio adds the
    socket and a traceback to every refused accept), then one line saying how many were
    dropped: a flood of connections must not fill the disk with log lines."""

    def __init__(self, per_minute: int = 20) -> None:
        super().__init__()
        self.per_minute = per_minute
        self._window = 0.0
        self._count = 0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        dropped = 0
        if now - self._window >= 60:
            dropped = self._dropped
            self._window, self._count, self._dropped = now, 0, 0
        self._count += 1
        if self._count > self.per_minute:
            self._dropped += 1
            return False
        line = record.getMessage().splitlines()[0] if record.getMessage() else ""
        if record.exc_info and record.exc_info[1] is not None:
            line += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        record.msg = f"({dropped} similar lines dropped) {line}" if dropped else line
        record.args, record.exc_info, record.exc_text, record.stack_info = (), None, None, None
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


def host_allowed(options: ServeOptions, header: str | None) -> bool:
    """Whether the Host header names this server: a page on another site resolved to
    127.0.0.1 (DNS rebinding) sends its own name and is refused."""
    name = host_name(header) if header is not None else None
    if name is None:  # missing, or not exactly host[:port] ("[::1]evil.com")
        return False
    bound = options.host.strip("[]").lower()
    if bound in ("0.0.0.0", "::", ""):  # every interface: the token guards it
        return True
    return name in LOOPBACK_NAMES or name == bound


def token_ok(options: ServeOptions, header: str | None) -> bool:
    if header is None or not header[:7].lower() == "bearer ":
        return False
    given = header[7:].strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, options.token.encode("utf-8"))


# --- the gate: Host, Origin, token, body size, a log line ------------------------------------


class Gate:
    """In front of every route: refuses what must not reach it, and logs a line per request
    (method, path, status, seconds, bytes, and an error's code: never the prompt or the
    token)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, seen = time.monotonic(), {"status": 0, "bytes": 0}
        error = bytearray()  # an error answer's body (small JSON), for its code in the log

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                seen["bytes"] += len(body)
                if seen["status"] >= 400 and len(error) + len(body) <= _ERROR_BODY_LIMIT:
                    error.extend(body)
            await send(message)

        ended: BaseException | None = None
        try:
            await self._gate(scope, receive, counted)
        except BaseException as exc:
            ended = exc
            raise
        finally:
            # Nothing sent: the client left, unless the app failed or was ended (a stop).
            status = seen["status"] or (499 if ended is None else 500)
            access_log.info(
                "%s %s %d %.3fs %dB%s",
                _printable(scope["method"]),
                _printable(scope["path"]),
                status,
                time.monotonic() - started,
                seen["bytes"],
                _error_code(bytes(error)) or _unsent(status, ended),
            )

    async def _gate(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        if not host_allowed(self.service.options, headers.get("host")):
            await refused_response(
                421,
                "The Host header does not name this server.",
                "misdirected_request",
                f"Call the server as {self.service.base_url} "
                "(a page of another site cannot use it).",
            )(scope, receive, send)
            return
        if scope["path"].startswith("/v1/images/files/") and scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)  # a signed URL: the route checks it, no token
            return
        origin = headers.get("origin")
        cors: dict[str, str] = {}
        if origin is not None:
            if _origin(origin) not in {_origin(o) for o in self.service.options.allow_origins}:
                await refused_response(
                    403,
                    f"Requests from the web page at {origin[:100]} are not allowed.",
                    "origin_not_allowed",
                    f"Start the server with --allow-origin {origin[:100]} to allow that site.",
                )(scope, receive, send)
                return
            cors = {"access-control-allow-origin": origin, "vary": "Origin",
                    "access-control-expose-headers": _EXPOSED}  # fmt: skip
            if scope["method"] == "OPTIONS":  # a preflight: no token is sent with it
                asked = headers.get("access-control-request-headers", "authorization, content-type")
                await Response(
                    status_code=204,
                    headers={
                        **cors,
                        "access-control-allow-methods": "GET, POST, OPTIONS",
                        "access-control-allow-headers": asked[:1000],
                        "access-control-max-age": "600",
                    },
                )(scope, receive, send)
                return
        if not token_ok(self.service.options, headers.get("authorization")):
            await refused_response(
                401,
                "A valid token is needed.",
                "invalid_api_key",
                "Send the server's token as the API key (Authorization: Bearer TOKEN): its "
                "--token-file, $CODEX_IMAGE_TOKEN, or the file serve named when it started.",
                headers={**cors, "www-authenticate": "Bearer"},
            )(scope, receive, send)
            return
        limit = MAX_EDIT_BYTES if scope["path"] == "/v1/images/edits" else MAX_JSON_BYTES
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await too_large(scope["path"], cors)(scope, receive, send)
            return
        await self.app(scope, _capped(receive, limit), _with_headers(send, cors))


_ERROR_BODY_LIMIT = 64 * 1024
# What a page allowed by --allow-origin may read of an answer beside its body.
_EXPOSED = ", ".join(
    ["retry-after", "x-should-retry", "x-codex-plan-type"]
    + [f"x-codex-{w}-{f}" for w in ("primary", "secondary")
       for f in ("used-percent", "window-minutes", "reset-at")]
)  # fmt: skip


def _unsent(status: int, ended: BaseException | None) -> str:
    """Why a request got no answer of ours, for the log line."""
    if ended is None:
        return " client_closed" if status == 499 else ""
    return " cancelled" if isinstance(ended, anyio.get_cancelled_exc_class()) else " server_error"


def _error_code(body: bytes) -> str:
    """`` usage_limit`` (the code of an error answer in OpenAI's shape), for the log line: a
    bare 429 says nothing of why."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f" {_printable(code)}" if isinstance(code, str) else ""


def _origin(origin: str) -> str:
    """An origin as browsers send it: scheme and host in lower case, no trailing slash."""
    return origin.strip().rstrip("/").lower()


def _printable(text: str) -> str:
    """A request's method or path for the log: what is outside a URL path's safe set is
    %-escaped, so that a request cannot forge a log line (a newline) or break it (NUL, space)."""
    return urllib.parse.quote(text, safe="/-._~!$&'()*+,;=:@%")


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` that stops a body (chunked, or longer than it said) once it passes ``limit``
    (a 413 before the rest is read), or once it took ``BODY_TIMEOUT_S`` (a 408: a client that
    stalls must not hold a connection and its memory for ever)."""
    total, done = 0, False
    deadline = time.monotonic() + BODY_TIMEOUT_S

    async def capped() -> Message:
        nonlocal total, done
        if done:  # the body is in: what comes now is the disconnect, whenever it comes
            return await receive()
        with anyio.move_on_after(deadline - time.monotonic()) as waited:
            message = await receive()
        if waited.cancelled_caught:
            raise HTTPException(408)
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise HTTPException(413)
            done = not message.get("more_body", False)
        return message

    return capped


def _with_headers(send: Send, extra: Mapping[str, str]) -> Send:
    if not extra:
        return send
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *raw]}
        await send(message)

    return sending
