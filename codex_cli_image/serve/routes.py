"""The routes: generations, edits (multipart), models, health, image files by signed URL, and the
event stream of ``stream: true``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._tasks import beside
from ..errors import (
    CodexImageError,
    InputError,
    internal_error,
    log_unexpected,
)
from ..request import MAX_REFERENCE_BYTES, MAX_REFERENCES, check_references
from ..results import ImageResult
from .gate import Gate
from .images_api import (
    MODEL_ID,
    ImagesCall,
    ParamError,
    error_body,
    error_reply,
    images_reply,
    parse_call,
    render_json,
    stream_error,
    stream_event_pieces,
    usage_headers,
)
from .options import (
    BODY_TIMEOUT_S,
    FILE_NAME,
)
from .responses import (
    QueueFull,
    error_response,
    queue_full_response,
    refused_response,
    too_large,
)
from .service import (
    Job,
    Made,
    Service,
    Watch,
    fingerprint,
    idempotency_key,
    signed_url_ok,
    stopping_error,
)

log = logging.getLogger(__name__)

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
    return Gate(app, service)


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
            return refused_response(
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
        known = service.usage.to_dict() if service.usage else None
        return JSONResponse({"ok": False, **body, "usage_limits": known}, status_code=503,
                            headers=headers)  # fmt: skip
    usage = await service.current_usage()
    return JSONResponse({"ok": True, "usage_limits": usage.to_dict() if usage else None})


async def _image_file(service: Service, request: Request) -> Response:
    """An image by its signed URL: no token needed (an ``<img src>`` or a plain GET), but the
    name, the expiry and the signature must be as this server signed them."""
    name = request.path_params["name"]
    expires = request.query_params.get("expires", "")
    signature = request.query_params.get("sig", "")
    if not signed_url_ok(service.url_key, name, expires, signature, time.time()):
        return refused_response(
            403,
            "This image URL is not valid, or it has expired.",
            "invalid_url",
            "Ask for the image again: its URL works for --url-ttl seconds (an hour by default).",
        )
    path = service.images / name
    if not FILE_NAME.fullmatch(name) or not path.is_file():
        return refused_response(
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
        return too_large(request.url.path)
    if exc.status_code == 408:
        return refused_response(
            408,
            f"The request body took over {BODY_TIMEOUT_S:g} s to arrive.",
            "body_timeout",
            "Send the request again over a faster connection.",
            headers={"connection": "close"},
        )
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    headers = {"allow": exc.headers["allow"]} if exc.headers and "allow" in exc.headers else None
    return refused_response(
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
            return done[0] if done is not None else error_response(stopping_error())
        except HTTPException:
            raise
        except ClientDisconnect:  # gone while sending its body: nobody to answer
            return Response(status_code=499)
        except CodexImageError as error:
            return error_response(error)
        except QueueFull as full:
            return queue_full_response(full)
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
        from ..fit import require_pillow

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
    token = request.headers.get("authorization", "")
    key = idempotency_key(token, request.headers.get("idempotency-key"))
    digests = await anyio.to_thread.run_sync(_digests, references)
    same = fingerprint(token, request.url.path, call, digests)
    if call.stream:  # admitted when the stream starts, before it says anything
        return _EventStream(service, call, references, base, cleanup, (same, key))

    # A usage limit, a full queue or a stop is answered before any work; a retry of a request
    # whose client left joins its job instead (no second image).
    with service.joined(same, key, call.n) as watch:
        async with anyio.create_task_group() as tasks:
            if watch.runs:  # runs on if the client leaves: a retry may come for the image
                tasks.start_soon(service.run, watch.job, call, references)
            done = await beside(watch.job.wait, partial(_until_disconnect, request.receive))
            if done is None:
                watch.leave()
        if done is None:  # the caller went away: its image is kept a while for its retry
            return Response(status_code=499)
        # Still watching while the reply is made: the job's files are not reaped meanwhile.
        return await _reply(service, watch.job, call, done[0], base)


async def _reply(service: Service, job: Job, call: ImagesCall, made: Made, base: str) -> Response:
    if not made.images:
        return error_response(made.failed[0])
    if not service.claim(job):
        return _delivered_already()
    try:
        entries, delivered = await service.reply_entries(call, made, base)
        pairs = list(zip(made.images, entries, strict=True))
        reply = images_reply(delivered, pairs, made.failed, created=int(time.time()))
        # Ten large images are 200 MB of JSON: rendered off the loop, in pieces, and sent so.
        pieces = await anyio.to_thread.run_sync(partial(render_json, reply))
    except BaseException:
        service.unclaim(job)  # not sent: a retry may still have it
        raise
    latest = next((r.usage_limits for r in reversed(made.images) if r.usage_limits), None)

    async def sent(whole: bool) -> None:
        if whole:  # no copy stays here
            await anyio.to_thread.run_sync(service.forget_files, job)
        else:  # the client left while it was sent: a retry may still have it
            service.unclaim(job)

    return _Pieces(pieces, media_type="application/json",
                   headers=usage_headers(latest or service.usage), sent=sent)  # fmt: skip


def _delivered_already() -> Response:
    return refused_response(
        409,
        "This request's images were just sent to another connection making the same request.",
        "request_delivered",
        "Send an Idempotency-Key header to have a retry answered with the same images.",
    )


def _digests(references: tuple[Path, ...]) -> list[str]:
    return [hashlib.sha256(path.read_bytes()).hexdigest() for path in references]


class _Pieces(Response):
    """A body sent in the pieces it was rendered in (its length known): no copy of it whole,
    and the loop serves other requests between them."""

    def __init__(
        self,
        pieces: list[bytes],
        media_type: str,
        headers: dict[str, str] | None = None,
        sent: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(media_type=media_type, headers=headers)
        self.pieces, self.sent = pieces, sent
        length = str(sum(len(piece) for piece in pieces)).encode()
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.raw_headers.append((b"content-length", length))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        *head, last = self.pieces or [b""]
        for piece in head:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if self.sent is not None:  # did the client leave before the end? (a look, not a wait)
            gone = False
            with anyio.move_on_after(0):
                gone = (await receive())["type"] == "http.disconnect"
            await self.sent(not gone)  # before the last piece: the client is told after it
        await send({"type": "http.response.body", "body": last, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


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
        keys: tuple[str, str | None],
    ) -> None:
        super().__init__(headers={"cache-control": "no-store", "x-accel-buffering": "no"})
        # A body of unknown length: no content-length (Response set one for its empty body).
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._service, self._call, self._references, self._base = service, call, references, base
        self._cleanup, self._keys = cleanup, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with self._service.joined(*self._keys, self._call.n) as watch:
                await self._stream(watch, scope, receive, send)
        except QueueFull as full:  # refused before anything was sent: a status of its own
            await queue_full_response(full)(scope, receive, send)
        except CodexImageError as error:
            await error_response(error)(scope, receive, send)
        finally:
            await anyio.to_thread.run_sync(self._cleanup)

    async def _stream(self, watch: Watch, scope: Scope, receive: Receive, send: Send) -> None:
        """The status line waits for the first thing to say (an image, or the first
        keep-alive): a failure before it (a usage limit comes in seconds) is then answered
        with its own status, which the SDKs turn into the right exception class."""
        lock = anyio.Lock()  # the keep-alives and the images share one stream
        started = False
        gone = False
        job = watch.job

        async def emit(*pieces: bytes) -> None:
            """One event (in pieces): nothing else is sent between them."""
            nonlocal started
            async with lock:
                if not started:
                    known = usage_headers(self._service.usage)  # as known when the stream starts
                    raw = [(k.encode(), v.encode()) for k, v in known.items()]
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [*self.raw_headers, *raw]})  # fmt: skip
                    started = True
                for piece in pieces:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})

        def leave(scope: anyio.CancelScope) -> None:
            nonlocal gone
            gone = True
            watch.leave()
            scope.cancel()

        async def keepalive(scope: anyio.CancelScope) -> None:
            try:
                while True:
                    await anyio.sleep(self._service.options.keepalive_s)
                    await emit(b": keep-alive\n\n")
            except OSError:  # the client is gone
                leave(scope)

        async def until_disconnect(scope: anyio.CancelScope) -> None:
            await _until_disconnect(receive, anyio.CancelScope())
            leave(scope)

        async def completed(result: ImageResult) -> None:
            """Each image as soon as it is made (of n, the first need not wait for the rest)."""
            call = replace(self._call, response_format="b64_json")
            (entry,), call = await self._service.reply_entries(call, Made([result], []), self._base)
            try:
                pieces = await anyio.to_thread.run_sync(
                    partial(stream_event_pieces, call, result, entry["b64_json"], int(time.time()))
                )
                await emit(*pieces)
            except OSError:  # gone: the disconnect ends the watch, not the images
                leave(tasks.cancel_scope)

        async with anyio.create_task_group() as running:
            if watch.runs:  # runs on if the client leaves: a retry may come for the images
                running.start_soon(self._service.run, job, self._call, self._references)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(keepalive, tasks.cancel_scope)
                tasks.start_soon(until_disconnect, tasks.cancel_scope)
                async for result in job.updates():
                    await completed(result)
                tasks.cancel_scope.cancel()
        if gone:
            return
        made = job.made
        with contextlib.suppress(OSError):
            if not made.images:  # nothing said yet: a status of its own
                if not started:
                    await error_response(made.failed[0])(scope, receive, send)
                else:
                    await emit(stream_error(made.failed[0]).encode())
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if made.failed:  # after the images that were made: the SDKs raise it
                await emit(stream_error(made.failed[0]).encode())
            if self._service.claim(job):  # sent: no copy stays here (gone before the end)
                await anyio.to_thread.run_sync(self._service.forget_files, job)
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
