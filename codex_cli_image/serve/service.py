"""What every request shares, testable without HTTP: admission to the queue and its release,
the usage-limit memory, the jobs (a request's images, made once, which a retry of it joins),
making the images through the client, and the reply's entries (base64, or signed URLs whose
files are kept until they expire)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

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
from ..usage import UsageLimits
from .images_api import (
    ImagesCall,
    ParamError,
    image_entry,
)
from .options import (
    EXTENSIONS,
    JOB_KEEP_S,
    MAX_IDEMPOTENCY_KEY,
    MAX_KEPT_BYTES,
    REAP_EVERY_S,
    USAGE_READ_S,
    USAGE_REFRESH_S,
    USAGE_WAIT_S,
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
    jobs: list[Job] = field(default_factory=list)
    """Requests being made, and those made for a client that left (kept for its retry)."""
    usage: UsageLimits | None = None
    """The subscription's usage windows as last known (an image's record, or a read)."""
    usage_at: float = -USAGE_REFRESH_S
    """When they were known (monotonic): older than :data:`USAGE_REFRESH_S`, /healthz reads."""
    background: TaskGroup | None = None
    """Where work that outlives a request runs (the server's task group)."""
    _reading: anyio.Event | None = None
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

    def note_usage(self, usage: UsageLimits | None) -> None:
        if usage is not None:
            self.usage, self.usage_at = usage, time.monotonic()

    async def current_usage(self) -> UsageLimits | None:
        """The usage windows as last known; when they are over a minute old, read again
        through codex in the background (one read at a time), waited for briefly: a health
        probe with a short timeout gets an answer at once, a slow read lands later."""
        if self._reading is None and time.monotonic() - self.usage_at >= USAGE_REFRESH_S:
            self._reading = anyio.Event()
            if self.background is not None:
                self.background.start_soon(self._refresh)
            else:
                await self._refresh()
        if self._reading is not None:
            with anyio.move_on_after(USAGE_WAIT_S):
                await self._reading.wait()
        return self.usage

    async def _refresh(self) -> None:
        try:
            self.note_usage(await self.client.ausage_limits(timeout=USAGE_READ_S))
        except CodexImageError as error:  # the last known stay; the next try in a minute
            log.warning("the usage windows could not be read: %s", error.message)
            self.usage_at = time.monotonic()
        except Exception as exc:  # a bug of ours must not take the server down
            log_unexpected(log, "reading the usage windows failed", exc)
            self.usage_at = time.monotonic()
        finally:
            if self._reading is not None:
                self._reading.set()
            self._reading = None

    @contextlib.contextmanager
    def joined(self, fingerprint: str, idempotency: str | None, n: int) -> Iterator[Watch]:
        """This request's watch, for the block, of the job it retries (the same
        ``Idempotency-Key``; or the same request, token and references, made or being made
        for a client that left and not yet delivered), else of a new job, admitted (see
        :meth:`admit`) and run by this request (``watch.runs``)."""
        with self._lock:
            job = self._attachable(fingerprint, idempotency)
            if job is not None:
                job.watchers += 1
        runs = job is None
        if job is None:
            self.admit(n)
            job = Job(fingerprint, idempotency, n, watchers=1)
            with self._lock:
                self.jobs.append(job)
        else:
            log.info("a retry joined an image %s", "made already" if job.ended else "on its way")
        watch = Watch(job, runs, self._lock)
        try:
            yield watch
        finally:
            watch.leave()
            if runs:
                with self._lock:
                    self.pending -= n
                    if not job.images and job in self.jobs:  # nothing paid to keep
                        self.jobs.remove(job)

    def _attachable(self, fingerprint: str, idempotency: str | None) -> Job | None:
        for job in self.jobs:
            if idempotency is not None and job.idempotency == idempotency:
                if job.fingerprint != fingerprint:
                    raise ParamError(
                        "Idempotency-Key",
                        "This Idempotency-Key was used a moment ago for another request.",
                        "Send a new key with each new request, and the same key only with "
                        "its exact retry.",
                    )
                return job
        for job in self.jobs:
            if (
                idempotency is None
                and job.idempotency is None
                and job.fingerprint == fingerprint
                and job.watchers == 0
                and not job.delivered
            ):
                return job
        return None

    async def run(self, job: Job, call: ImagesCall, references: tuple[Path, ...]) -> None:
        """Make ``job``'s images (by the request that runs it), whoever still watches: a
        client that leaves does not end an image it asked for."""
        try:
            made = await self.make(call, references, job.add)
            job.failed.extend(made.failed)
        finally:
            # Ended from outside (the server stops): each image not made says why.
            missing = job.n - len(job.images) - len(job.failed)
            job.failed.extend(stopping_error() for _ in range(max(0, missing)))
            job.finish(time.monotonic())

    def claim(self, job: Job) -> bool:
        """Whether ``job``'s images are this watcher's to send (the first that asks, or any
        with its Idempotency-Key). A job without a key is delivered once, then forgotten."""
        with self._lock:
            if job.idempotency is not None:
                return True
            if job.delivered:
                return False
            job.delivered = True
            if job in self.jobs:
                self.jobs.remove(job)
            return True

    def unclaim(self, job: Job) -> None:
        """``job``'s images were not sent after all: a retry may join it again (kept as one
        whose client left)."""
        with self._lock:
            if job.idempotency is None and job.delivered:
                job.delivered = False
                if job not in self.jobs:
                    self.jobs.append(job)

    def forget_files(self, job: Job) -> None:
        """Remove ``job``'s images from the private folder once sent, but those still kept for
        a URL (blocking: file removals). With ``--out-dir`` every image stays."""
        if self.options.out_dir is not None or job.idempotency is not None:
            return  # a keyed job's images stay for its replays, until it is reaped
        with self._lock:
            gone = [r.path for r in job.images if r.path.name not in self.kept]
        for path in gone:
            _remove(path)

    async def make(
        self,
        call: ImagesCall,
        references: tuple[Path, ...],
        completed: Callable[[ImageResult], Awaitable[None]] | None = None,
    ) -> Made:
        """The call's n images (admitted already) through the client's limit, side by side;
        every one that was made is kept, whatever happened to the others, and handed to
        ``completed`` as soon as it is made. (A usage limit among the failures is remembered by
        the client, in the memory the queue asks.)"""
        made: list[ImageResult] = []
        failed: list[CodexImageError] = []

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
                self.note_usage(made[-1].usage_limits)
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
        return Made(made, failed)

    async def reply_entries(
        self, call: ImagesCall, made: Made, base: str
    ) -> tuple[list[dict[str, Any]], ImagesCall]:
        """The ``data`` entries: each image as base64 or as a signed URL on this server,
        converted to the asked format; and the call as delivered: a paid image is never lost
        to a conversion Pillow refuses (a WebP over 16383 px): then all go as PNG, and the
        reply says so. Encoding runs off the event loop. The made PNGs stay (their job removes
        them); a converted copy stays only for its URL."""
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
            if call.response_format == "url":
                entries.append(image_entry(result, b64_json=None, url=self._url(base, name)))
            else:
                encoded = await anyio.to_thread.run_sync(_base64, data)
                entries.append(image_entry(result, b64_json=encoded, url=None))
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

    def reap(self, now: float | None = None, clock: float | None = None) -> None:
        """Remove the private folder's images whose URLs expired, and the oldest beyond
        :data:`MAX_KEPT_BYTES`; forget the jobs nobody came back for in :data:`JOB_KEEP_S`
        (``clock``: monotonic), and their images (blocking: file removals)."""
        now = time.time() if now is None else now
        clock = time.monotonic() if clock is None else clock
        with self._lock:
            total = sum(size for _, size in self.kept.values())
            gone = []
            for name, (expires, size) in list(self.kept.items()):
                if expires <= now or total > MAX_KEPT_BYTES:
                    gone.append(self.images / name)
                    total -= size
                    del self.kept[name]
            for job in list(self.jobs):
                if job.ended_at is not None and job.watchers == 0:
                    if clock - job.ended_at >= JOB_KEEP_S:
                        self.jobs.remove(job)
                        if self.options.out_dir is None:
                            gone += [r.path for r in job.images if r.path.name not in self.kept]
        for path in gone:
            _remove(path)

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


@dataclass(eq=False)
class Watch:
    """One request's view of a job: whether it runs it, and whether its client is still
    there (a job that nobody watches can be joined by a retry)."""

    job: Job
    runs: bool
    _lock: threading.Lock
    _gone: bool = False

    def leave(self) -> None:
        """The client left (or was answered): once only."""
        with self._lock:
            if not self._gone:
                self._gone = True
                self.job.watchers -= 1


@dataclass(eq=False)
class Job:
    """One request's images, made once by the request that asked first, and watched by it and
    by every retry that joins it (:meth:`Service.joined`)."""

    fingerprint: str
    idempotency: str | None
    n: int
    watchers: int = 0
    delivered: bool = False
    ended_at: float | None = None
    images: list[ImageResult] = field(default_factory=list)
    failed: list[CodexImageError] = field(default_factory=list)
    _signals: list[anyio.Event] = field(default_factory=lambda: [anyio.Event()])

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def made(self) -> Made:
        return Made(list(self.images), list(self.failed))

    async def add(self, result: ImageResult) -> None:
        self.images.append(result)
        self._signal()

    def finish(self, clock: float) -> None:
        self.ended_at = clock
        self._signal()

    def _signal(self) -> None:
        self._signals.append(anyio.Event())
        self._signals[-2].set()

    async def wait(self) -> Made:
        """What the job made, once it has ended."""
        async for _ in self.updates():
            pass
        return self.made

    async def updates(self) -> AsyncIterator[ImageResult]:
        """Each image as it is made (those made already first), until the job ends."""
        seen = 0
        while True:
            signal = self._signals[-1]
            while seen < len(self.images):
                seen += 1
                yield self.images[seen - 1]
            if self.ended:
                return
            await signal.wait()


def fingerprint(token: str, path: str, call: ImagesCall, references: Sequence[str]) -> str:
    """What makes two requests the same one: the token, the route, the checked call (a
    multipart body's boundary or a JSON body's spacing do not count) and the references'
    digests."""
    text = json.dumps([token, path, asdict(call), list(references)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def idempotency_key(token: str, header: str | None) -> str | None:
    """The request's ``Idempotency-Key`` (as the openai SDKs' ``idempotency_key`` or Stripe's
    clients send it), under its token; None without one."""
    if header is None:
        return None
    if not header or len(header) > MAX_IDEMPOTENCY_KEY:
        raise ParamError(
            "Idempotency-Key",
            f"The Idempotency-Key header is empty or over {MAX_IDEMPOTENCY_KEY} characters.",
            "Send a unique key of at most 255 characters (a UUID) or none.",
        )
    return hashlib.sha256(f"{token}\n{header}".encode()).hexdigest()


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
