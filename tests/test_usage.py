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
