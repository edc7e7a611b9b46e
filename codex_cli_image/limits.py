"""What a long-lived host remembers of a usage limit, so that it answers at once instead of
spending a codex run on each request until the limit resets.

One object owns that wait: it is set only from a :class:`~codex_cli_image.errors.QuotaError`
that classify made from codex's own records (whose reset time is already capped by the usage
windows codex reported, and a week), it says the wait left rather than the wait when codex
said it, and it is forgotten when the login changes (another account has limits of its own).
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import CodexImageError, QuotaError
from .failures import wait_text
from .preflight import read_auth_file

__all__ = ["UNKNOWN_RESET_S", "UsageLimitMemory", "account_of", "block_s"]

UNKNOWN_RESET_S = 60.0
"""How long a usage limit with no reset time is answered without codex: a guess kept short."""


def block_s(error: CodexImageError) -> float | None:
    """For how many seconds later calls should get ``error`` again without running codex: a
    usage limit lasts hours, so asking codex again only spends time. None: run codex again
    (any other error, and a rate limit, which passes in seconds)."""
    if not isinstance(error, QuotaError) or error.reason == "rate_limited":
        return None
    if error.retry_after_s is not None and error.retry_after_s > 0:
        return error.retry_after_s
    return UNKNOWN_RESET_S


def account_of(codex_home: Path) -> str | None:
    """Which login the codex home holds (its account id), read afresh; None when unknown."""
    tokens = (read_auth_file(codex_home) or {}).get("tokens")
    account = tokens.get("account_id") if isinstance(tokens, dict) else None
    return account if isinstance(account, str) else None


class UsageLimitMemory:
    """The usage limit in force, if any (thread-safe)."""

    def __init__(
        self,
        login: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._login, self._clock, self._wall = login, clock, wall
        self._lock = threading.Lock()
        self._held: tuple[float, float, QuotaError, str | None] | None = None

    def note(self, error: CodexImageError) -> None:
        """Remember ``error`` when it is a usage limit (see :func:`block_s`)."""
        seconds = block_s(error)
        if seconds is None or not isinstance(error, QuotaError):
            return
        login = self._login()
        with self._lock:
            self._held = (self._clock() + seconds, self._wall() + seconds, error, login)

    def forget(self) -> None:
        """Drop the limit held (codex reported the windows free again)."""
        with self._lock:
            self._held = None

    def in_force(self) -> QuotaError | None:
        """The limit still in force, its wait and hint told from now; None once it reset or
        the login changed."""
        with self._lock:
            held = self._held
        if held is None:
            return None
        until, until_wall, error, login = held
        # Both clocks: the monotonic one stops while the machine sleeps (a laptop shut for
        # the week would be refused on waking), the wall clock can be set back.
        left = min(until - self._clock(), until_wall - self._wall())
        if left <= 0 or self._login() != login:
            with self._lock:
                if self._held is held:
                    self._held = None
            return None
        again = copy.copy(error)
        again.retry_after_s = left
        # The hint's "(in 2 h 10 min)" was true when codex said it: say it anew.
        again.hint = re.sub(r"\(in [^)]*\)", f"(in {wait_text(left)})", error.hint)
        return again
