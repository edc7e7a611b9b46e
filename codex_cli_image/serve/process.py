"""The process: the listening socket, uvicorn with our signal handling, and the run until a
signal (images in flight ended, the private folder removed)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from types import FrameType

import anyio
import uvicorn

from .._watchdog import WATCHDOG
from ..client import Client
from ..errors import CodexImageError, InputError
from .gate import (
    GatedH11Protocol,
    RateLimitedLog,
    raise_fd_limit,
)
from .options import (
    ServeOptions,
)
from .routes import build_app
from .service import (
    Service,
)

# --- the process -----------------------------------------------------------------------------

log = logging.getLogger(__name__)


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


def serve(options: ServeOptions, *, on_ready: Callable[[str], None] = lambda _: None) -> int:
    """Serve until SIGTERM or SIGHUP (0) or SIGINT (130): new connections stop, every image in
    flight is ended (codex's tree and files with it, its caller told so), then the process
    exits. ``on_ready`` is called with the base URL once connections are accepted (the CLI
    prints it as the first line on stdout)."""
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
        # One memory of a usage limit: the client's (it answers calls with it), asked by the
        # queue's admission too.
        limits = client.usage_limit_memory
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
            await anyio.to_thread.run_sync(_say_if_not_ready, client)  # before the URL
            on_ready(base_url)

        async def stop_images() -> None:
            while not server.should_exit:  # noqa: ASYNC110 (set by a signal handler)
                await anyio.sleep(0.05)
            service.stopping = True
            await client.aclose()  # every image in flight ends: its caller gets a 503

        async def main() -> None:
            async with anyio.create_task_group() as tasks:
                service.background = tasks
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


def _say_if_not_ready(client: Client) -> None:
    """Check codex and the login as ``doctor`` does (nothing spent): when images cannot be made,
    the log says why at start (the server still starts; ``/healthz`` says the same), not a 403
    in an application later."""
    try:
        client.check()
    except CodexImageError as error:
        log.warning("images cannot be made yet: %s %s", error.message, error.hint)
