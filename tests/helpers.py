"""Shared test helpers: paths, an independent PNG check, a private network namespace prefix."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import psutil

from codex_cli_image.testing import FakeCodex, realcodex

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
# Resolved before any test points HOME elsewhere.
NPM_CACHE = realcodex.cache_root()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def png_ok(data: bytes) -> bool:
    """A small independent PNG check: signature, chunk CRCs, IHDR first, IEND last."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    pos, kinds = 8, []
    while pos < len(data):
        if pos + 12 > len(data):
            return False
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(body) != length or int.from_bytes(crc, "big") != zlib.crc32(kind + body):
            return False
        kinds.append(kind)
        pos += 12 + length
    return bool(kinds) and kinds[0] == b"IHDR" and kinds[-1] == b"IEND"


def offline(argv: Sequence[str]) -> list[str]:
    """Prefix ``argv`` with a private network namespace when we can make one (root + unshare)."""
    unshare = shutil.which("unshare")
    if sys.platform.startswith("linux") and unshare and os.geteuid() == 0:
        return [unshare, "-n", *argv]
    return list(argv)


def survivors(fake: FakeCodex) -> list[int]:
    """The fake codex processes (and their helpers) of ``fake`` that are still running."""
    pids = [c.pid for c in fake.calls] + [c.helper_pid for c in fake.calls if c.helper_pid]
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test sends SIGINT: start it with SIGINT at its default
    disposition. A suite started as a background job (``cmd &``, nohup, many CI agents) inherits
    SIGINT as ignored, which Python and our CLI rightly keep; the test means a Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
