"""The usage windows, read from codex's two records of them (pure)."""

from __future__ import annotations

import datetime as dt

from codex_cli_image.usage import UsageLimits, UsageWindow, from_app_server, from_rollout

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 7, 9, 0, tzinfo=UTC).timestamp()  # a Monday


def test_the_session_log_record_of_every_release() -> None:
    record = {
        "limit_id": "codex",
        "limit_name": None,
        "primary": {"used_percent": 34.5, "window_minutes": 300, "resets_at": NOW + 5 * 3600},
        "secondary": {"used_percent": 12.0, "window_minutes": 10080, "resets_at": NOW + 3 * 86400},
        "credits": {"has_credits": False},
        "plan_type": None,
    }
    limits = from_rollout(record)
    assert limits is not None
    assert limits.to_dict() == {
        "primary": {
            "used_percent": 34.5,
            "window_minutes": 300,
            "resets_at": "2026-12-07T14:00:00Z",
        },
        "secondary": {
            "used_percent": 12.0,
            "window_minutes": 10080,
            "resets_at": "2026-12-10T09:00:00Z",
        },  # fmt: skip
        "plan": None,
    }
    assert limits.describe(NOW, UTC) == (
        "5 h window 34.5 % used (resets 14:00) · weekly 12 % used (resets Thu 09:00)"
    )
    assert limits.reached is None


def test_no_headers_no_windows() -> None:
    assert from_rollout({"primary": None, "secondary": None, "plan_type": None}) is None
    assert from_app_server({}) is None
    assert UsageLimits().describe(NOW) == "usage windows unknown"


def test_the_app_server_answer() -> None:
    answer = {
        "rateLimits": {
            "limitId": "codex",
            "primary": {"usedPercent": 100, "windowDurationMins": 300, "resetsAt": NOW + 600},
            "secondary": {"usedPercent": 40, "windowDurationMins": 10080, "resetsAt": None},
            "credits": None,
            "planType": "plus",
        },
        "rateLimitsByLimitId": {},
    }
    limits = from_app_server(answer)
    assert limits == UsageLimits(
        UsageWindow(100.0, 300, NOW + 600), UsageWindow(40.0, 10080, None), "plus"
    )
    assert limits.reached == limits.primary
    assert limits.describe(NOW, UTC) == "5 h window 100 % used (resets 09:10) · weekly 40 % used"


def test_what_a_backend_or_a_model_could_put_there_is_not_believed() -> None:
    odd = {
        "primary": {"used_percent": "34", "window_minutes": 300, "resets_at": 1},
        "secondary": {"used_percent": float("nan")},
        "plan_type": "plus\nINJECTED",
    }
    assert from_rollout(odd) is None
    weird = from_rollout({"primary": {"used_percent": 5, "window_minutes": -1, "resets_at": 1e20},
                          "plan_type": "Pro"})  # fmt: skip
    assert weird == UsageLimits(UsageWindow(5.0, None, None), None, "pro")
    assert weird.describe(NOW) == "window 5 % used"


def test_credits_pay_beyond_a_used_up_window() -> None:
    """A window at 100 % is refused only without credits (codex-facts section 11)."""
    full = {"primary": {"used_percent": 100.0, "window_minutes": 300, "resets_at": NOW + 600}}
    assert from_rollout(full) is not None and from_rollout(full).reached is not None  # type: ignore[union-attr]
    paid = from_rollout({**full, "credits": {"has_credits": True, "balance": "12"}})
    assert paid is not None and paid.credits and paid.reached is None
    answer = {"rateLimits": {"primary": {"usedPercent": 100, "windowDurationMins": 300,
                                         "resetsAt": NOW + 600},
                             "credits": {"hasCredits": False, "unlimited": True}}}  # fmt: skip
    unlimited = from_app_server(answer)
    assert unlimited is not None and unlimited.reached is None


def test_a_held_limit_ends_by_the_wall_clock_too() -> None:
    """The monotonic clock stops while the machine sleeps: a laptop shut until after the reset
    is not refused on waking."""
    from codex_cli_image.errors import QuotaError
    from codex_cli_image.limits import UsageLimitMemory

    mono, wall = [0.0], [NOW]
    memory = UsageLimitMemory(clock=lambda: mono[0], wall=lambda: wall[0])
    limit = QuotaError("Limit.", reason="usage_limit", hint="Wait (in 2 h).", retry_after_s=7200.0)
    memory.note(limit)
    mono[0], wall[0] = 60.0, NOW + 60
    assert memory.in_force() is not None
    wall[0] = NOW + 7201  # asleep meanwhile: the monotonic clock barely moved
    assert memory.in_force() is None


def test_what_codex_says_when_it_cannot_read_the_windows() -> None:
    from codex_cli_image.app_server import read_error
    from codex_cli_image.errors import AuthError, LaunchError, TransientError

    url = "GET https://chatgpt.com/backend-api/wham/usage"
    refused = read_error(f"failed to fetch codex rate limits: {url} failed: 401 Unauthorized; "
                         "body={}", -32603)  # fmt: skip
    assert isinstance(refused, AuthError) and refused.reason == "login_refused"
    challenge = read_error(f"failed to fetch codex rate limits: {url} failed: 403 Forbidden; "
                           "body=<html>Just a moment...</html> login", -32603)  # fmt: skip
    assert isinstance(challenge, TransientError)  # a proxy's page is no verdict on the login
    assert isinstance(read_error("method not found", -32601), LaunchError)
