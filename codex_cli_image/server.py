"""``codex-image serve``: the OpenAI Images API over HTTP, made by the signed-in Codex CLI.

Open WebUI, LibreChat, n8n, the openai SDKs and many more talk to an OpenAI-compatible images
endpoint at a base URL of the user's choosing; this gives them our dependable path. One
:class:`~codex_cli_image.Client` serves every request (settings once, warm preflight, one
concurrency limit). Starlette (anyio-native ASGI), uvicorn and python-multipart come with the
``serve`` extra.

The parameters, replies and errors are :mod:`codex_cli_image.images_api`'s; this module is the
HTTP shell: the gate (Host, Origin, token, body size, a line of log per request), the routes, the
queue, disconnects, and the process (port, token file, signals).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._facts import user_dir
from ._tasks import beside
from ._watchdog import WATCHDOG
from .client import Client
from .errors import (
    CodexImageError,
    InputError,
    TransientError,
    internal_error,
    log_unexpected,
)
from .gate import (
    GatedH11Protocol,
    RateLimitedLog,
    check_token_file,
    host_name,
    raise_fd_limit,
    sign_url,
    signed_url_ok,
)
from .images_api import (
    MODEL_ID,
    ImagesCall,
    ParamError,
    error_body,
    error_reply,
    image_entry,
    images_reply,
    parse_call,
    refusal,
    stream_error,
    stream_event,
)
from .limits import UsageLimitMemory, account_of
from .request import MAX_REFERENCE_BYTES, MAX_REFERENCES, ImageRequest, check_references
from .results import ImageResult
from .settings import Settings

__all__ = ["DEFAULT_PORT", "ServeOptions", "Service", "build_app", "resolve_token", "serve"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("codex_cli_image.serve.access")

DEFAULT_PORT = 8765
DEFAULT_MAX_QUEUE = 32
MAX_JSON_BYTES = 1024 * 1024
MAX_EDIT_BYTES = MAX_REFERENCES * MAX_REFERENCE_BYTES + MAX_JSON_BYTES
KEEPALIVE_S = 10.0  # "at least every 15 s", with room for a busy loop
TOKEN_ENV = "CODEX_IMAGE_TOKEN"
QUEUE_RETRY_AFTER_S = 30
BODY_TIMEOUT_S = 120.0
_FILE_NAME = re.compile(r"img-[0-9]{8}-[0-9]{6}-[0-9a-f]{12}\.(?:png|jpg|webp)")
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
URL_TTL_S = 3600.0
"""How long an image URL works by default: an hour, as OpenAI's."""
MAX_KEPT_BYTES = 1 << 30
"""Images kept for their URLs in the private folder; beyond it the oldest go first."""
REAP_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What ``codex-image serve`` is started with. ``out_dir`` None: images are kept in a
    private temporary folder while the server runs (their URLs last as long)."""

    token: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    out_dir: Path | None = None
    allow_origins: tuple[str, ...] = ()
    max_queue: int = DEFAULT_MAX_QUEUE
    settings: Settings = Settings()
    keepalive_s: float = KEEPALIVE_S
    url_ttl_s: float = URL_TTL_S
    """How long an image URL works (and, without ``out_dir``, how long its file is kept)."""


# --- the token -------------------------------------------------------------------------------


def resolve_token(
    token_file: str | None, host: str, env: Mapping[str, str]
) -> tuple[str, str | None]:
    """The bearer token and, when it was kept or made in our folder, where (to tell the user).

    ``--token-file`` first, then ``$CODEX_IMAGE_TOKEN``; with neither, a loopback server uses
    a random token made once and kept readable by the user only; any other host refuses."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            problem = check_token_file(path)
            if problem is not None:
                raise InputError(
                    f"The token file {problem}.",
                    reason="token_file_unsafe",
                    hint="Keep the token in a file of your own that only you can read "
                    f"(chmod 600 {path}), as ssh wants for a private key.",
                )
            text = path.read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"The token file {token_file} cannot be read: "
                f"{getattr(exc, 'strerror', None) or exc}.",
                reason="token_unreadable",
                hint="Name a readable file holding the token.",
            ) from None
        return _checked_token(text, f"The token file {token_file}"), None
    if env.get(TOKEN_ENV):
        return _checked_token(env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"), None
    if not is_loopback(host):
        raise InputError(
            f"Serving on {host} (not this machine only) needs a token.",
            reason="token_required",
            hint=f"Pass --token-file FILE or set {TOKEN_ENV}: anyone who can reach the port could "
            "otherwise spend your subscription.",
        )
    folder = user_dir("config", env)
    if folder is None:
        raise InputError(
            "There is no home folder to keep the server's token in.",
            reason="token_required",
            hint=f"Pass --token-file FILE or set {TOKEN_ENV}.",
        )
    return _kept_token(folder / "serve-token"), str(folder / "serve-token")


def _checked_token(text: str, where: str) -> str:
    if len(text) < 16 or any(c.isspace() or not c.isprintable() for c in text):
        raise InputError(
            f"{where} does not hold a usable token.",
            reason="invalid_token",
            hint="Use 16 or more printable characters without spaces, e.g. the "
            "output of: python3 -c 'import secrets; print(secrets.token_urlsafe())'.",
        )
    return text


def _kept_token(path: Path) -> str:
    """The token in ``path``, made (0600, in a 0700 folder) when missing."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            problem = check_token_file(path)
            if problem is not None:
                raise InputError(
                    f"The token file {problem}.",
                    reason="token_file_unsafe",
                    hint=f"Run `chmod 600 {path}`, or remove it to have a new token made.",
                ) from None
            return _checked_token(path.read_text("utf-8").strip(), f"The token file {path}")
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(token + "\n")
        return token
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"The token file {path} cannot be made or read: "
            f"{getattr(exc, 'strerror', None) or exc}.",
            reason="token_unreadable",
            hint=f"Pass --token-file FILE or set {TOKEN_ENV}.",
        ) from None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- the service: what every request shares --------------------------------------------------


@dataclass(slots=True)
class Service:
    """The client, the folders, the queue and a usage limit's memory, shared by the routes."""

    client: Client
    options: ServeOptions
    images: Path
    uploads: Path
    base_url: str = ""
    """What the server is called by (its bound host and real port), for messages."""
    pending: int = 0
    limits: UsageLimitMemory = field(default_factory=UsageLimitMemory)
    """A usage limit in force: later requests get it at once, without running codex."""
    stopping: bool = False
    url_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    """Signs image URLs; made anew at each start (the private folder is new too)."""
    kept: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Files of the private folder kept for their URLs: name -> (expiry, bytes), oldest first."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def host_allowed(self, header: str | None) -> bool:
        """Whether the Host header names this server: a page on another site resolved to
        127.0.0.1 (DNS rebinding) sends its own name and is refused."""
        name = host_name(header) if header is not None else None
        if name is None:  # missing, or not exactly host[:port] ("[::1]evil.com")
            return False
        bound = self.options.host.strip("[]").lower()
        if bound in ("0.0.0.0", "::", ""):  # every interface: the token guards it
            return True
        return name in _LOOPBACK_NAMES or name == bound

    def token_ok(self, header: str | None) -> bool:
        if header is None or not header[:7].lower() == "bearer ":
            return False
        given = header[7:].strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self.options.token.encode("utf-8"))

    def admit(self, n: int) -> None:
        """Count ``n`` images in, or refuse: a usage limit still in force, or a full queue."""
        with self._lock:
            if self.stopping:
                raise _stopping()
            limit = self.limits.in_force()
            if limit is not None:
                raise limit
            capacity = self.client.concurrency + self.options.max_queue
            if n > capacity:  # could never be admitted: retrying would not help
                raise ParamError(
                    "n",
                    f"n={n} is more than this server takes at once "
                    f"({capacity}: -j plus --max-queue).",
                    f"Ask for at most {capacity} images per request.",
                )
            if self.pending + n > capacity:
                raise _QueueFull(self.pending, self.options.max_queue)
            self.pending += n

    async def cancel_on_stop(self, scope: anyio.CancelScope) -> None:
        """End a request when the server stops: a body still being sent, or the wait for a
        slot (images in flight are ended by the client's close)."""
        while not self.stopping:  # noqa: ASYNC110 (set from the signal's watcher)
            await anyio.sleep(0.05)
        await anyio.sleep(0.5)  # images in flight: their own 503 comes first
        scope.cancel()

    def leave(self, n: int, failures: Iterable[CodexImageError]) -> None:
        with self._lock:
            self.pending -= n
            for error in failures:
                self.limits.note(error)

    async def make(
        self,
        call: ImagesCall,
        references: tuple[Path, ...],
        completed: Callable[[ImageResult], Awaitable[None]] | None = None,
    ) -> _Made:
        """The call's n images (admitted already) through the client's limit, side by side;
        every one that was made is kept, whatever happened to the others, and handed to
        ``completed`` as soon as it is made."""
        made: list[ImageResult] = []
        failed: list[CodexImageError] = []
        try:

            async def one() -> None:
                request = ImageRequest(
                    call.prompt,
                    output=self.images / _new_name("png"),
                    references=references,
                    size=call.size,
                    transparent=call.transparent,
                )
                try:
                    made.append(await self.client.agenerate(request))
                    if completed is not None:
                        await completed(made[-1])
                except CodexImageError as error:
                    failed.append(_stopping() if self.client.closed else _server_side(error))
                except Exception as exc:
                    log_unexpected(log, "unexpected error making an image", exc)
                    failed.append(internal_error(exc))

            async with anyio.create_task_group() as tasks:
                for _ in range(call.n):
                    tasks.start_soon(one)
        finally:
            self.leave(call.n, failed)
        return _Made(made, failed)

    async def reply_entries(
        self, call: ImagesCall, made: _Made, base: str
    ) -> tuple[list[dict[str, Any]], ImagesCall]:
        """The ``data`` entries: each image as base64 or as a signed URL on this server,
        converted to the asked format; and the call as delivered: a paid image is never lost
        to a conversion Pillow refuses (a WebP over 16383 px): then all go as PNG, and the
        reply says so. Encoding runs off the event loop. Without ``--out-dir``, only what a URL
        points to stays, until the URL expires."""
        files = []
        for result in made.images:
            files.append((result, await anyio.to_thread.run_sync(result.path.read_bytes)))
        if call.output_format != "png":
            try:
                files = [(r, await anyio.to_thread.run_sync(_convert, d, call)) for r, d in files]
            except Exception as exc:  # Pillow raises what it likes
                log.warning("converting to %s failed (%s): sending PNG", call.output_format, exc)
                call = replace(call, output_format="png")
        entries = []
        for result, data in files:
            if call.response_format == "url" or self.options.out_dir is not None:
                name = result.path.name
                if call.output_format != "png":
                    name = await anyio.to_thread.run_sync(self._write, data, call.output_format)
                    if self.options.out_dir is None:
                        await anyio.to_thread.run_sync(_remove, result.path)
            if call.response_format == "url":
                entries.append(image_entry(result, b64_json=None, url=self._url(base, name)))
            else:
                encoded = await anyio.to_thread.run_sync(_base64, data)
                entries.append(image_entry(result, b64_json=encoded, url=None))
                if self.options.out_dir is None:  # sent: nothing of it stays here
                    await anyio.to_thread.run_sync(_remove, result.path)
        await anyio.to_thread.run_sync(self.reap)
        return entries, call

    def _url(self, base: str, name: str) -> str:
        """A URL for ``name`` that works without the token until it expires (as OpenAI's)."""
        expires = int(time.time() + self.options.url_ttl_s)
        if self.options.out_dir is None:
            with self._lock:
                size = (self.images / name).stat().st_size
                self.kept[name] = (float(expires), size)
        signature = sign_url(self.url_key, name, expires)
        return f"{base}/images/files/{name}?expires={expires}&sig={signature}"

    def reap(self, now: float | None = None) -> None:
        """Remove the private folder's images whose URLs expired, and the oldest beyond
        :data:`MAX_KEPT_BYTES` (blocking: file removals)."""
        now = time.time() if now is None else now
        with self._lock:
            total = sum(size for _, size in self.kept.values())
            gone = []
            for name, (expires, size) in list(self.kept.items()):
                if expires <= now or total > MAX_KEPT_BYTES:
                    gone.append(name)
                    total -= size
                    del self.kept[name]
        for name in gone:
            _remove(self.images / name)

    async def reap_forever(self) -> None:
        while True:
            await anyio.sleep(REAP_EVERY_S)
            await anyio.to_thread.run_sync(self.reap)

    def _write(self, data: bytes, output_format: str) -> str:
        name = _new_name(_EXTENSIONS[output_format])
        fd = os.open(self.images / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        return name


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


@dataclass(frozen=True, slots=True)
class _Made:
    images: list[ImageResult]
    failed: list[CodexImageError]


class _QueueFull(Exception):
    def __init__(self, pending: int, max_queue: int) -> None:
        super().__init__(f"{pending} images are being made or waiting (--max-queue {max_queue}).")


def _server_side(error: CodexImageError) -> CodexImageError:
    """The server picks every output path: one that cannot be used (its folder was removed, the
    disk is read-only) is the server's fault, not the caller's request (a 400 with a server path
    and a command-line hint); it is logged here and answered as a server error."""
    if not (isinstance(error, InputError) and error.reason.startswith("output_")):
        return error
    log.error("the server's image folder cannot be used: %s %s", error.message, error.hint)
    return TransientError(
        "The server cannot store images right now.",
        reason="server_storage",
        hint="Tell the server's operator: its log says which folder failed and why.",
    )


def _stopping() -> TransientError:
    return TransientError(
        "The server is stopping; the image was not made.",
        reason="cancelled",
        hint="Retry once the server runs again.",
    )


def _new_name(extension: str) -> str:
    return f"img-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}.{extension}"


def _convert(png: bytes, call: ImagesCall) -> bytes:
    from .fit import convert_png

    return convert_png(png, call.output_format, call.output_compression)


# --- the routes ------------------------------------------------------------------------------


def build_app(service: Service) -> ASGIApp:
    """The ASGI application: the routes behind the gate."""
    routes = [
        Route("/v1/images/generations", _guarded(service, _generations), methods=["POST"]),
        Route("/v1/images/edits", _guarded(service, _edits), methods=["POST"]),
        Route("/v1/models", _guarded(service, _models), methods=["GET"]),
        Route("/v1/images/files/{name}", _guarded(service, _image_file), methods=["GET"]),
        Route("/healthz", _guarded(service, _healthz), methods=["GET"]),
    ]

    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.router.redirect_slashes = False  # a 307 to a URL built from the client's Host: a 404
    return _Gate(app, service)


async def _generations(service: Service, request: Request) -> Response:
    body = await request.body()
    try:
        fields = json.loads(body)
    except RecursionError:
        raise ParamError(
            "body", "The JSON body is nested too deeply.", "Send a flat JSON object."
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise ParamError(
            "body", "The body is not JSON.", "Send a JSON object with at least a prompt."
        ) from None
    if not isinstance(fields, dict):
        raise ParamError(
            "body",
            "The body is not a JSON object.",
            "Send a JSON object with at least a prompt.",
        )
    call = parse_call(fields)
    return await _answer(service, request, call, ())


async def _edits(service: Service, request: Request) -> Response:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ParamError(
            "body",
            "/v1/images/edits takes a multipart/form-data body (the images are files).",
            "Send the prompt as a form field and the images as image or image[] files.",
        )
    async with request.form(max_files=4 * MAX_REFERENCES, max_fields=100) as form:
        files = [v for k, v in form.multi_items() if k in ("image", "image[]")]
        if any(k == "mask" for k, _ in form.multi_items()):
            raise ParamError(
                "mask",
                "mask is not supported: the Codex CLI's image tool takes none.",
                "Leave mask out, and say in the prompt which part to change.",
            )
        texts = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        call = parse_call(texts, edit=True)
        uploads = [f for f in files if isinstance(f, UploadFile)]
        if not uploads or len(uploads) != len(files):
            raise ParamError(
                "image",
                "No image file was sent.",
                "Send one to five images as image or image[] files.",
            )
        if len(uploads) > MAX_REFERENCES:
            raise ParamError(
                "image",
                f"{len(uploads)} images were sent; at most {MAX_REFERENCES} are taken.",
                "Send fewer images.",
            )
        too_large = [u for u in uploads if (u.size or 0) > MAX_REFERENCE_BYTES]
        if too_large:
            return _refused(
                413,
                f"The image {_upload_name(too_large[0])} has "
                f"{too_large[0].size} bytes; at most {MAX_REFERENCE_BYTES} are "
                "taken.",
                "image_too_large",
                "Send a smaller image (PNG, JPEG, GIF or WebP, at most 25 MB).",
            )
        folder = Path(tempfile.mkdtemp(dir=service.uploads))
        cleanup = partial(shutil.rmtree, folder, ignore_errors=True)
        response: Response | None = None
        try:
            references = []
            for index, upload in enumerate(uploads):
                path = folder / f"image-{index}"
                await anyio.to_thread.run_sync(_save_upload, upload, path)
                references.append(path)
            await anyio.to_thread.run_sync(_check_uploads, references, uploads)
            response = await _answer(service, request, call, tuple(references), cleanup)
            return response
        finally:
            if not isinstance(response, _EventStream):
                await anyio.to_thread.run_sync(cleanup)


async def _models(service: Service, request: Request) -> Response:
    model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "codex-cli-image"}
    return JSONResponse({"object": "list", "data": [model]})


async def _healthz(service: Service, request: Request) -> Response:
    try:
        service.admit(0)
        await anyio.to_thread.run_sync(service.client.check)
    except CodexImageError as error:
        _, body, headers = error_reply(error)  # 503 whatever the kind: not ready
        return JSONResponse({"ok": False, **body}, status_code=503, headers=headers)
    return JSONResponse({"ok": True})


async def _image_file(service: Service, request: Request) -> Response:
    """An image by its signed URL: no token needed (an ``<img src>`` or a plain GET), but the
    name, the expiry and the signature must be as this server signed them."""
    name = request.path_params["name"]
    expires = request.query_params.get("expires", "")
    signature = request.query_params.get("sig", "")
    if not signed_url_ok(service.url_key, name, expires, signature, time.time()):
        return _refused(
            403,
            "This image URL is not valid, or it has expired.",
            "invalid_url",
            "Ask for the image again: its URL works for --url-ttl seconds (an hour by default).",
        )
    path = service.images / name
    if not _FILE_NAME.fullmatch(name) or not path.is_file():
        return _refused(
            404,
            "No such image on this server.",
            "not_found",
            "Images are kept only while the server runs (or in --out-dir).",
        )
    media = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
    return FileResponse(path, media_type=media[name.rsplit(".", 1)[1]])


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 413:
        return _too_large(request.url.path)
    if exc.status_code == 408:
        return _refused(
            408,
            f"The request body took over {BODY_TIMEOUT_S:g} s to arrive.",
            "body_timeout",
            "Send the request again over a faster connection.",
            headers={"connection": "close"},
        )
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    headers = {"allow": exc.headers["allow"]} if exc.headers and "allow" in exc.headers else None
    return _refused(
        exc.status_code,
        f"{exc.detail}.".replace("..", "."),
        code,
        "See the README's serve section for the routes and their fields.",
        headers=headers,
    )


def _guarded(
    service: Service, route: Callable[[Service, Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """A route of ``service`` whose errors are answered in OpenAI's shape; a bug of ours is a
    500, logged."""

    async def endpoint(request: Request) -> Response:
        try:
            done = await beside(partial(route, service, request), service.cancel_on_stop)
            return done[0] if done is not None else _error_response(_stopping())
        except HTTPException:
            raise
        except ClientDisconnect:  # gone while sending its body: nobody to answer
            return Response(status_code=499)
        except CodexImageError as error:
            return _error_response(error)
        except _QueueFull as full:
            return _refused(
                429,
                str(full),
                "queue_full",
                "Wait and retry, or start the server with a larger --max-queue.",
                headers={"retry-after": str(QUEUE_RETRY_AFTER_S)},
            )
        except Exception as exc:
            log_unexpected(log, f"unexpected error in {request.url.path}", exc)
            return JSONResponse(error_body(internal_error(exc)), status_code=500)

    return endpoint


async def _answer(
    service: Service,
    request: Request,
    call: ImagesCall,
    references: tuple[Path, ...],
    cleanup: Callable[[], None] = lambda: None,
) -> Response:
    """Make the call's images and answer: at once as JSON, or as Server-Sent Events (which
    then own ``cleanup``, run once the references are no longer needed)."""
    base = f"{request.url.scheme}://{request.headers.get('host', 'localhost')}/v1"
    if call.output_format != "png":
        from .fit import require_pillow

        try:
            require_pillow()
        except InputError:
            raise ParamError(
                "output_format",
                f"output_format {call.output_format} needs Pillow, "
                "which is not installed beside the server.",
                f"Install it: {sys.executable} -m pip install '.[serve,fit]' in your "
                "clone of codex-cli-image, or ask for png.",
            ) from None
    service.admit(call.n)  # a usage limit, a full queue or a stop: answered before any work
    if call.stream:
        return _EventStream(service, call, references, base, cleanup)

    async def work() -> _Made:
        return await service.make(call, references)

    done = await beside(work, partial(_until_disconnect, request.receive))
    if done is None:  # the caller went away: its images were cancelled, codex ended
        return Response(status_code=499)
    made = done[0]
    if not made.images:
        return _error_response(made.failed[0])
    entries, delivered = await service.reply_entries(call, made, base)
    pairs = list(zip(made.images, entries, strict=True))
    reply = images_reply(delivered, pairs, made.failed, created=int(time.time()))
    # Ten large images are tens of MB of JSON: rendered off the loop, which keeps answering.
    body = await anyio.to_thread.run_sync(_json_bytes, reply)
    return Response(body, media_type="application/json")


def _json_bytes(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def _until_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` when the client disconnects (the body was read: what comes next is the
    disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


class _EventStream(Response):
    """``stream: true``: a completed event per image as it is made, a keep-alive comment every
    ``keepalive_s`` meanwhile, and an ``error`` event when some failed."""

    media_type = "text/event-stream"

    def __init__(
        self,
        service: Service,
        call: ImagesCall,
        references: tuple[Path, ...],
        base: str,
        cleanup: Callable[[], None],
    ) -> None:
        super().__init__(headers={"cache-control": "no-store", "x-accel-buffering": "no"})
        # A body of unknown length: no content-length (Response set one for its empty body).
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._service, self._call, self._references, self._base = service, call, references, base
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream(scope, receive, send)
        finally:
            await anyio.to_thread.run_sync(self._cleanup)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The status line waits for the first thing to say (an image, or the first
        keep-alive): a failure before it (a usage limit comes in seconds) is then answered
        with its own status, which the SDKs turn into the right exception class."""
        made: list[_Made] = []
        lock = anyio.Lock()  # the keep-alives and the images share one stream
        started = False

        async def emit(body: bytes) -> None:
            nonlocal started
            async with lock:
                if not started:
                    await send(
                        {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                    )
                    started = True
                await send({"type": "http.response.body", "body": body, "more_body": True})

        async def keepalive(scope: anyio.CancelScope) -> None:
            try:
                while True:
                    await anyio.sleep(self._service.options.keepalive_s)
                    await emit(b": keep-alive\n\n")
            except OSError:  # the client is gone
                scope.cancel()

        async def completed(result: ImageResult) -> None:
            """Each image as soon as it is made (of n, the first need not wait for the rest)."""
            call = replace(self._call, response_format="b64_json")
            (entry,), call = await self._service.reply_entries(
                call, _Made([result], []), self._base
            )
            with contextlib.suppress(OSError):  # gone: the disconnect ends the rest
                await emit(stream_event(call, result, entry["b64_json"], int(time.time())).encode())

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(keepalive, tasks.cancel_scope)
            tasks.start_soon(_until_disconnect, receive, tasks.cancel_scope)
            made.append(await self._service.make(self._call, self._references, completed))
            tasks.cancel_scope.cancel()
        if not made:
            return
        with contextlib.suppress(OSError):
            if not started and made[0].failed:  # nothing said yet: a status of its own
                await _error_response(made[0].failed[0])(scope, receive, send)
                return
            if made[0].failed:  # after the images that were made: the SDKs raise it
                await emit(stream_error(made[0].failed[0]).encode())
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _upload_name(upload: UploadFile) -> str:
    return repr((upload.filename or "image")[:80])


def _check_uploads(paths: list[Path], uploads: list[UploadFile]) -> None:
    """The references' checks, before any work, naming each image as the client sent it (not
    by the path it was kept under here)."""
    for path, upload in zip(paths, uploads, strict=True):
        try:
            check_references([path])
        except InputError as error:
            raise ParamError(
                "image", error.message.replace(str(path), _upload_name(upload)), error.hint
            ) from None


def _save_upload(upload: UploadFile, path: Path) -> None:
    upload.file.seek(0)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1024 * 1024)


def _error_response(error: CodexImageError) -> Response:
    status, body, headers = error_reply(error)
    return JSONResponse(body, status_code=status, headers=headers)


def _refused(
    status: int, message: str, code: str, hint: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(
        refusal(status, message, code, hint), status_code=status, headers=dict(headers or {})
    )


def _too_large(path: str, cors: Mapping[str, str] | None = None) -> Response:
    limit = MAX_EDIT_BYTES if path == "/v1/images/edits" else MAX_JSON_BYTES
    return _refused(
        413,
        f"The request body is over {limit // (1024 * 1024)} MiB.",
        "body_too_large",
        f"Send at most {MAX_REFERENCES} images of at most "
        f"{MAX_REFERENCE_BYTES // (1024 * 1024)} MB each, and a JSON body under 1 MiB.",
        headers={**(cors or {}), "connection": "close"},  # an allowed page may read it
    )


# --- the gate: Host, Origin, token, body size, a log line ------------------------------------


class _Gate:
    """In front of every route: refuses what must not reach it, and logs a line per request
    (method, path, status, seconds, bytes; never the prompt or the token)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, seen = time.monotonic(), {"status": 0, "bytes": 0}

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self._gate(scope, receive, counted)
        finally:
            access_log.info(
                "%s %s %d %.3fs %dB",
                _printable(scope["method"]),
                _printable(scope["path"]),
                seen["status"] or 499,
                time.monotonic() - started,
                seen["bytes"],
            )

    async def _gate(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        if not self.service.host_allowed(headers.get("host")):
            await _refused(
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
                await _refused(
                    403,
                    f"Requests from the web page at {origin[:100]} are not allowed.",
                    "origin_not_allowed",
                    f"Start the server with --allow-origin {origin[:100]} to allow that site.",
                )(scope, receive, send)
                return
            cors = {"access-control-allow-origin": origin, "vary": "Origin"}
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
        if not self.service.token_ok(headers.get("authorization")):
            await _refused(
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
            await _too_large(scope["path"], cors)(scope, receive, send)
            return
        await self.app(scope, _capped(receive, limit), _with_headers(send, cors))


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


# --- the process -----------------------------------------------------------------------------


class _Uvicorn(uvicorn.Server):
    """uvicorn with our own signal handling: SIGTERM, SIGHUP and SIGINT stop it, and are not
    raised again once it stopped (that would kill us with the signal's status)."""

    def __init__(self, config: uvicorn.Config, signals: list[int]) -> None:
        super().__init__(config)
        self.signals = signals

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        names = ("SIGTERM", "SIGHUP", "SIGINT")
        wanted = [getattr(signal, n) for n in names if hasattr(signal, n)]
        previous = {sig: signal.signal(sig, self._on_signal) for sig in wanted}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:  # a second Ctrl-C: stop waiting
            self.force_exit = True
        self.signals.append(sig)
        self.should_exit = True


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if sys.platform == "win32":  # there SO_REUSEADDR would let another take the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
            else:  # a restart need not wait for the last connections' TIME_WAIT
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise InputError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
            reason="address_unusable",
            hint="Pick another --port (0 takes a free one) or --host.",
        ) from None
    return sock


def serve(options: ServeOptions, *, token_note: str | None = None) -> int:
    """Serve until SIGTERM or SIGHUP (0) or SIGINT (130): new connections stop, every image in
    flight is ended (codex's tree and files with it, its caller told so), then the process
    exits. Prints the base URL as the first line on stdout once connections are accepted."""
    sock = _bind(options.host, options.port)
    raise_fd_limit()
    for name in ("uvicorn.error", "asyncio"):  # a flood of bad connections: bounded lines
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitedLog) for f in logger.filters):
            logger.addFilter(RateLimitedLog())
    signals: list[int] = []
    state = Path(tempfile.mkdtemp(prefix="codex-image-serve-"))
    kept = WATCHDOG.track_file(state)  # removed even if we are killed
    images = options.out_dir or state / "images"
    client = Client(options.settings)
    try:
        try:
            images.mkdir(parents=True, exist_ok=True)
            (state / "uploads").mkdir()
        except OSError as exc:
            raise InputError(
                f"The --out-dir {images} cannot be used: {exc.strerror or exc}.",
                reason="output_dir_unusable",
                hint="Name a folder you can write to (it is made if missing).",
            ) from None
        port = sock.getsockname()[1]
        host = options.host if ":" not in options.host else f"[{options.host}]"
        base_url = f"http://{host}:{port}/v1"
        limits = UsageLimitMemory(partial(account_of, client.codex_home))
        service = Service(client, options, images, state / "uploads", base_url, limits=limits)
        config = uvicorn.Config(
            build_app(service),
            lifespan="off",
            log_config=None,
            access_log=False,
            log_level="warning",
            ws="none",
            http=GatedH11Protocol,  # a header timeout, and room for clients that send at once
            timeout_graceful_shutdown=15,
            server_header=False,
        )
        server = _Uvicorn(config, signals)

        async def announce() -> None:
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
                await anyio.sleep(0.02)
            if token_note:  # before the URL: whoever waits for the URL may read it at once
                print(
                    f"codex-image serve: the token is in {token_note} (send it as the API key)",
                    file=sys.stderr,
                    flush=True,
                )
            print(base_url, flush=True)

        async def stop_images() -> None:
            while not server.should_exit:  # noqa: ASYNC110 (set by a signal handler)
                await anyio.sleep(0.05)
            service.stopping = True
            await client.aclose()  # every image in flight ends: its caller gets a 503

        async def main() -> None:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(announce)
                tasks.start_soon(stop_images)
                tasks.start_soon(service.reap_forever)
                await server.serve(sockets=[sock])
                tasks.cancel_scope.cancel()

        anyio.run(main)
    finally:
        sock.close()
        client.close()
        shutil.rmtree(state, ignore_errors=True)
        WATCHDOG.drop(kept)
    return 130 if signal.SIGINT in signals else 0
