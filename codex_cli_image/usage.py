"""The subscription's usage windows (the 5-hour and the weekly one), read from what codex
records (pure): the ``token_count`` records of a run's session log, and the answer of
``codex app-server``'s ``account/rateLimits/read`` (codex-facts section 11).

Both become one shape, :class:`UsageLimits`, whatever the release: ``primary`` is the shorter
window, ``secondary`` the longer, either None when codex knew nothing of it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["UsageLimits", "UsageWindow", "from_app_server", "from_rollout"]


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """One usage window: how much of it is used, how long it is, when it resets."""

    used_percent: float
    window_minutes: int | None = None
    resets_at: float | None = None
    """Unix time (seconds), or None when codex did not say."""

    def to_dict(self) -> dict[str, object]:
        resets = None
        if self.resets_at is not None:
            when = dt.datetime.fromtimestamp(self.resets_at, dt.timezone.utc)
            resets = when.isoformat(timespec="seconds").replace("+00:00", "Z")
        return {
            "used_percent": self.used_percent,
            "window_minutes": self.window_minutes,
            "resets_at": resets,
        }

    def describe(self, now: float, tz: dt.tzinfo | None = None) -> str:
        """``5 h window 34.5 % used (resets 14:20)``: the reset as a time of day within a day,
        else with its weekday (``resets Thu 09:00``), in ``tz`` (local time when None)."""
        text = f"{_window_name(self.window_minutes)} {_percent(self.used_percent)} % used"
        if self.resets_at is None:
            return text
        when = dt.datetime.fromtimestamp(self.resets_at, tz).astimezone(tz)
        form = "%H:%M" if self.resets_at - now < 20 * 3600 else "%a %H:%M"
        return f"{text} (resets {when.strftime(form)})"


@dataclass(frozen=True, slots=True)
class UsageLimits:
    """The usage windows of the login's subscription, as codex last knew them."""

    primary: UsageWindow | None = None
    secondary: UsageWindow | None = None
    plan: str | None = None
    credits: bool = False
    """The account has credits (or is unlimited): a used-up window is then paid from them, not
    refused (codex-facts section 11: ``x-codex-credits-*``)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "primary": None if self.primary is None else self.primary.to_dict(),
            "secondary": None if self.secondary is None else self.secondary.to_dict(),
            "plan": self.plan,
        }

    def describe(self, now: float, tz: dt.tzinfo | None = None) -> str:
        """One line for people: ``5 h window 34.5 % used (resets 14:20) · weekly 12 % used
        (resets Thu 09:00)``."""
        parts = [w.describe(now, tz) for w in (self.primary, self.secondary) if w is not None]
        return " · ".join(parts) if parts else "usage windows unknown"

    @property
    def last_reset(self) -> float | None:
        """When the window that resets last resets (Unix time), if codex said."""
        resets = [w.resets_at for w in (self.primary, self.secondary) if w and w.resets_at]
        return max(resets, default=None)

    @property
    def reached(self) -> UsageWindow | None:
        """A window used up (100 %), if any and no credits pay beyond it: the one that resets
        last."""
        if self.credits:
            return None
        full = [
            w for w in (self.primary, self.secondary) if w is not None and w.used_percent >= 100
        ]
        return max(full, key=lambda w: w.resets_at or 0.0, default=None)


def from_rollout(rate_limits: Mapping[str, Any]) -> UsageLimits | None:
    """The windows of a session log's ``token_count`` record (its ``rate_limits``): windows
    with ``used_percent``, ``window_minutes`` and ``resets_at``; None when it holds none."""
    primary = _window(rate_limits.get("primary"), "used_percent", "window_minutes", "resets_at")
    secondary = _window(rate_limits.get("secondary"), "used_percent", "window_minutes", "resets_at")
    if primary is None and secondary is None:
        return None
    credits = _credits(rate_limits.get("credits"), "has_credits")
    return UsageLimits(primary, secondary, _plan(rate_limits.get("plan_type")), credits)


def from_app_server(result: Mapping[str, Any]) -> UsageLimits | None:
    """The windows of ``account/rateLimits/read``'s result (``rateLimits``: windows with
    ``usedPercent``, ``windowDurationMins`` and ``resetsAt``, and ``planType``); None when it
    holds none."""
    limits = result.get("rateLimits")
    if not isinstance(limits, Mapping):
        return None
    names = ("usedPercent", "windowDurationMins", "resetsAt")
    primary = _window(limits.get("primary"), *names)
    secondary = _window(limits.get("secondary"), *names)
    plan = _plan(limits.get("planType"))
    if primary is None and secondary is None:
        return UsageLimits(plan=plan) if plan is not None else None
    return UsageLimits(primary, secondary, plan, _credits(limits.get("credits"), "hasCredits"))


def _credits(value: object, has: str) -> bool:
    return isinstance(value, Mapping) and (value.get(has) is True or value.get("unlimited") is True)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _window(value: object, used: str, minutes: str, resets: str) -> UsageWindow | None:
    if not isinstance(value, Mapping):
        return None
    percent = _number(value.get(used))
    if percent is None or not 0 <= percent <= 1000:
        return None
    length = _number(value.get(minutes))
    reset = _number(value.get(resets))
    return UsageWindow(
        used_percent=percent,
        window_minutes=int(length) if length is not None and 0 < length < 10**7 else None,
        resets_at=reset if reset is not None and 0 < reset < 10**11 else None,
    )


def _plan(value: object) -> str | None:
    # codex says "plus", "pro", ... (its own enum); anything else is not a plan name.
    if isinstance(value, str) and 0 < len(value) <= 40 and value.replace("_", "").isalnum():
        return value.lower()
    return None


def _percent(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _window_name(minutes: int | None) -> str:
    if minutes is None:
        return "window"
    if minutes == 7 * 24 * 60:
        return "weekly"
    if minutes % (24 * 60) == 0:
        return f"{minutes // (24 * 60)} d window"
    if minutes % 60 == 0:
        return f"{minutes // 60} h window"
    return f"{minutes} min window"
