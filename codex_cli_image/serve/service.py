"""What every request shares, testable without HTTP: admission to the queue and its release,
the usage-limit memory, making the images through the client, and the reply's entries (base64,
or signed URLs whose files are kept until they expire)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from ..client import Client
from ..errors import (
    CodexImageError,
    InputError,
    TransientError,
    internal_error,
    log_unexpected,
)
from ..limits import UsageLimitMemory
from ..request import ImageRequest
from ..results import ImageResult
from .images_api import (
    ImagesCall,
    ParamError,
    image_entry,
)
from .options import (
    EXTENSIONS,
    MAX_KEPT_BYTES,
    REAP_EVERY_S,
    ServeOptions,
)
from .responses import QueueFull

log = logging.getLogger(__name__)

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

    def admit(self, n: int) -> None:
        """Count ``n`` images in, or refuse: a usage limit still in force, or a full queue."""
        with self._lock:
            if self.stopping:
                raise stopping_error()
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
                raise QueueFull(self.pending, self.options.max_queue)
            self.pending += n

    async def cancel_on_stop(self, scope: anyio.CancelScope) -> None:
        """End a request when the server stops: a body still being sent, or the wait for a
        slot (images in flight are ended by the client's close)."""
        while not self.stopping:  # noqa: ASYNC110 (set from the signal's watcher)
            await anyio.sleep(0.05)
        await anyio.sleep(0.5)  # images in flight: their own 503 comes first
        scope.cancel()

    @contextlib.contextmanager
    def admitted(self, n: int) -> Iterator[None]:
        """``n`` images counted in for the block (or refused, see :meth:`admit`), and out
        again however it ends."""
        self.admit(n)
        try:
            yield
        finally:
            with self._lock:
                self.pending -= n

    async def make(
        self,
        call: ImagesCall,
        references: tuple[Path, ...],
        completed: Callable[[ImageResult], Awaitable[None]] | None = None,
    ) -> Made:
        """The call's n images (admitted already) through the client's limit, side by side;
        every one that was made is kept, whatever happened to the others, and handed to
        ``completed`` as soon as it is made. A usage limit among the failures is remembered."""
        made: list[ImageResult] = []
        failed: list[CodexImageError] = []
        try:

            async def one() -> None:
                request = ImageRequest(
                    call.prompt,
                    output=self.images / new_name("png"),
                    references=references,
                    size=call.size,
                    transparent=call.transparent,
                )
                try:
                    made.append(await self.client.agenerate(request))
                    if completed is not None:
                        await completed(made[-1])
                except CodexImageError as error:
                    failed.append(stopping_error() if self.client.closed else server_side(error))
                except Exception as exc:
                    log_unexpected(log, "unexpected error making an image", exc)
                    failed.append(internal_error(exc))

            async with anyio.create_task_group() as tasks:
                for _ in range(call.n):
                    tasks.start_soon(one)
        finally:
            for error in failed:
                self.limits.note(error)
        return Made(made, failed)

    async def reply_entries(
        self, call: ImagesCall, made: Made, base: str
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
        name = new_name(EXTENSIONS[output_format])
        fd = os.open(self.images / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        return name


_B64_SLICE = 3 << 20  # bytes (a multiple of 3): a few ms of the interpreter each


def _base64(data: bytes) -> str:
    """Base64 of ``data``, encoded in slices: binascii holds the interpreter while it works,
    and a server thread doing 20 MB at once kept the event loop waiting for it."""
    view = memoryview(data)
    return "".join(
        base64.b64encode(view[i : i + _B64_SLICE]).decode("ascii")
        for i in range(0, len(data), _B64_SLICE)
    )


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


@dataclass(frozen=True, slots=True)
class Made:
    images: list[ImageResult]
    failed: list[CodexImageError]


def server_side(error: CodexImageError) -> CodexImageError:
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


def stopping_error() -> TransientError:
    return TransientError(
        "The server is stopping; the image was not made.",
        reason="cancelled",
        hint="Retry once the server runs again.",
    )


def new_name(extension: str) -> str:
    return f"img-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}.{extension}"


def _convert(png: bytes, call: ImagesCall) -> bytes:
    from ..fit import convert_png

    return convert_png(png, call.output_format, call.output_compression)


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
