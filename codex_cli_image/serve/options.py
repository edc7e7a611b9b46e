"""What ``codex-image serve`` is started with, and the limits every part of it shares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..request import MAX_REFERENCE_BYTES, MAX_REFERENCES
from ..settings import Settings

DEFAULT_PORT = 8765
DEFAULT_MAX_QUEUE = 32
MAX_JSON_BYTES = 1024 * 1024
MAX_EDIT_BYTES = MAX_REFERENCES * MAX_REFERENCE_BYTES + MAX_JSON_BYTES
KEEPALIVE_S = 10.0  # "at least every 15 s", with room for a busy loop
TOKEN_ENV = "CODEX_IMAGE_TOKEN"
QUEUE_RETRY_AFTER_S = 30
BODY_TIMEOUT_S = 120.0
FILE_NAME = re.compile(r"img-[0-9]{8}-[0-9]{6}-[0-9a-f]{12}\.(?:png|jpg|webp)")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
URL_TTL_S = 3600.0
"""How long an image URL works by default: an hour, as OpenAI's."""
MAX_KEPT_BYTES = 1 << 30
"""Images kept for their URLs in the private folder; beyond it the oldest go first."""
REAP_EVERY_S = 30.0
JOB_KEEP_S = 300.0
"""An image made for a client that left is kept this long for a retry of the same request."""
MAX_IDEMPOTENCY_KEY = 255
USAGE_REFRESH_S = 60.0
"""/healthz reads the usage windows again when the last known are older than this."""
USAGE_READ_S = 15.0
USAGE_WAIT_S = 0.5
"""How long /healthz waits for a read of the usage windows it started (then: the last known)."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What ``codex-image serve`` is started with. ``out_dir`` None: no image is kept, but for
    its URL until the URL expires (in a private folder removed when the server stops)."""

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
