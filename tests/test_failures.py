"""Failure classification and reset-time parsing, table-driven (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from codex_cli_image.failures import SENTINEL, RunOutcome, classify, parse_retry
from codex_cli_image.testing.fake_codex import failure_text

TZ = dt.timezone(dt.timedelta(hours=-5))
NOW = dt.datetime(2026, 11, 21, 14, 0, 0, tzinfo=TZ)


def failed(message: str, **kwargs: object) -> RunOutcome:
    return RunOutcome(exit_code=1, turn_failed=message, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scenario", "kind", "reason"),
    [
        ("usage_limit", "quota", "usage_limit"),
        ("usage_limit_date", "quota", "usage_limit"),
        ("rate_limited", "quota", "rate_limited"),
        ("credits_exhausted", "quota", "credits_exhausted"),
        ("plan_not_included", "quota", "plan_not_included"),
        ("refresh_failed", "auth", "refresh_failed"),
        ("unauthorized", "auth", "unauthorized"),
        ("model_not_supported", "auth", "model_not_supported"),
        ("capacity", "transient", "capacity"),
        ("stream_disconnected", "transient", "stream_error"),
    ],
)
def test_codex_failure_texts(scenario: str, kind: str, reason: str) -> None:
    outcome = failed(failure_text(scenario, NOW), thread_id="t-1", codex_version="0.169.0")
    error = classify(outcome, now=NOW)
    assert (error.kind, error.reason) == (kind, reason)
    assert error.codex_exit_code == 1 and error.thread_id == "t-1"
    assert error.codex_version == "0.169.0"
    assert error.hint


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Quota exceeded. Check your plan and billing details.", "credits_exhausted"),
        ("You hit your spend cap for this month.", "credits_exhausted"),
        ("We're currently experiencing high demand, which may cause temporary errors.", "capacity"),
        ("Connection failed: error sending request", "stream_error"),
        ("Error while reading the server response", "stream_error"),
        ("request timed out", "stream_error"),
        (
            "Your access token could not be refreshed because your refresh token has expired.",
            "refresh_failed",
        ),
        ("You have since logged out or signed in to another account.", "refresh_failed"),
        ("Missing bearer or basic authentication in header", "unauthorized"),
        ("Your request was rejected by the safety system.", "content_policy"),
        ("failed with status 500, request id req-401-abc", "codex_failed"),
        ("upstream said 4290 bytes", "codex_failed"),
    ],
)
def test_more_texts(message: str, reason: str) -> None:
    assert classify(failed(message), now=NOW).reason == reason


def test_numbers_match_only_as_whole_tokens() -> None:
    """Regression guard: a request id such as req-401-abc is not a 401."""
    assert classify(failed("boom (request id: req-401-abc)"), now=NOW).reason == "codex_failed"
    assert classify(failed("unexpected status 401: nope"), now=NOW).reason == "unauthorized"
    assert classify(failed("status 429, id r429x"), now=NOW).reason == "rate_limited"


def test_content_policy_is_an_input_error() -> None:
    error = classify(failed("This request violates our content policy."), now=NOW)
    assert error.kind == "input" and "Rephrase" in error.hint


def test_usage_limit_carries_the_reset_time() -> None:
    error = classify(failed(failure_text("usage_limit", NOW)), now=NOW)
    assert error.reason == "usage_limit"
    assert error.retry_at == "2026-11-21T15:45:00-05:00" and error.retry_after_s == 6300.0
    dated = classify(failed(failure_text("usage_limit_date", NOW)), now=NOW)
    assert dated.retry_at == "2026-11-23T15:45:00-05:00"
    assert dated.retry_after_s == 2 * 86400 + 6300
    later = classify(failed("You've hit your usage limit. Try again later."), now=NOW)
    assert later.retry_at is None and later.retry_after_s is None


@pytest.mark.parametrize(
    ("now", "printed"),
    [
        (NOW, "Nov 23rd, 2026 3:45 PM"),
        (dt.datetime(2026, 12, 29, 23, 30, tzinfo=TZ), "Jan 1st, 2027 1:15 AM"),
        (dt.datetime(2027, 2, 9, 10, 14, 59, tzinfo=TZ), "Feb 11th, 2027 11:59 AM"),
        (dt.datetime(2027, 2, 20, 11, 0, tzinfo=TZ), "Feb 22nd, 2027 12:45 PM"),
    ],
)
def test_the_fakes_dated_reset_parses_back(now: dt.datetime, printed: str) -> None:
    """The fake prints a usage limit's reset date as codex does, and we read it back exactly."""
    text = failure_text("usage_limit_date", now)
    assert f"try again at {printed}." in text
    error = classify(failed(text), now=now)
    assert (
        error.retry_at
        == (now + dt.timedelta(days=2, hours=1, minutes=45))
        .replace(second=0, microsecond=0)
        .isoformat()
    )


@pytest.mark.parametrize(
    ("scenario", "ahead"), [("usage_limit", 6300), ("usage_limit_date", 2 * 86400 + 6300)]
)
def test_the_fakes_reset_lies_ahead_of_the_real_clock(scenario: str, ahead: int) -> None:
    """Regression guard: the fake once printed a fixed date (Nov 23rd, 2026); once it had passed,
    retry_after_s was 0 on every machine. Its reset is now made from the clock it runs at."""
    now = dt.datetime.now().astimezone()
    error = classify(failed(failure_text(scenario)), now=now)
    assert error.retry_after_s is not None
    assert ahead - 120 <= error.retry_after_s <= ahead  # printed to the minute


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("try again at 3:45 PM.", "2026-11-21T15:45:00-05:00"),
        ("Try again at 1:30 PM", "2026-11-22T13:30:00-05:00"),  # passed today: tomorrow
        ("try again at 12:05 AM", "2026-11-22T00:05:00-05:00"),
        ("try again at 12:05 PM", "2026-11-22T12:05:00-05:00"),
        ("try again at Nov 23rd, 2026 3:45 PM.", "2026-11-23T15:45:00-05:00"),
        ("try again at Dec 1st, 2026 9:00 AM", "2026-12-01T09:00:00-05:00"),
        ("or try again in 3 days 6 hours 57 minutes.", "2026-11-24T20:57:00-05:00"),
        ("try again in 45 minutes", "2026-11-21T14:45:00-05:00"),
        ("Try again later.", None),
        ("try again at 13:99", None),
        ("try again at Foo 3rd, 2026 3:45 PM", None),
    ],
)
def test_parse_retry(text: str, expected: str | None) -> None:
    parsed = parse_retry(text, NOW)
    assert (parsed[0].isoformat() if parsed else None) == expected
    if parsed:
        assert parsed[1] == (parsed[0] - NOW).total_seconds()


def test_a_reset_in_the_current_minute_is_not_tomorrow() -> None:
    """#30: "try again at 2:00 PM" read at 14:00:30 meant tomorrow: serve then answered every
    request with 429 for a day. codex prints its reset to the minute: it lies within this one."""
    now = NOW.replace(hour=14, minute=0, second=30)
    at, wait = parse_retry("try again at 2:00 PM", now) or (None, None)
    assert at == now.replace(second=0) + dt.timedelta(minutes=1) and wait == 30.0
    at, _ = parse_retry("try again at 1:59 PM", now) or (None, None)
    assert at is not None and at.date() > now.date()  # a minute that has passed: tomorrow


def test_quota_text_on_stderr_counts_when_codex_failed() -> None:
    outcome = RunOutcome(
        exit_code=1, stderr_tail="ERROR: You've hit your usage limit. Try again at 4:00 PM."
    )
    assert classify(outcome, now=NOW).reason == "usage_limit"


def test_exit_zero_outcomes() -> None:
    assert classify(RunOutcome(exit_code=0), now=NOW).reason == "no_image"
    sentinel = RunOutcome(exit_code=0, agent_messages=("Sorry.", f"{SENTINEL}\n"))
    error = classify(sentinel, now=NOW)
    assert (error.kind, error.reason) == ("auth", "image_tool_unavailable")
    refused = RunOutcome(
        exit_code=0,
        image_status="failed",
        image_failure="unexpected status 403 Forbidden: image_generation_not_supported",
    )
    assert classify(refused, now=NOW).reason == "image_generation_refused"
    unknown_failure = RunOutcome(exit_code=0, image_status="failed", image_failure="oops")
    assert classify(unknown_failure, now=NOW).reason == "no_image"
    bad = RunOutcome(exit_code=0, invalid_image="the 'IHDR' chunk fails its CRC check")
    assert classify(bad, now=NOW).reason == "invalid_image"


def test_timeout_and_unknown_failures_explain_themselves() -> None:
    timeout = classify(RunOutcome(exit_code=None, timed_out=True, timeout_s=30), now=NOW)
    assert timeout.reason == "timeout" and "30 s" in timeout.message
    crashed = classify(RunOutcome(exit_code=-9, stderr_tail="a\nlast words\n"), now=NOW)
    assert crashed.reason == "codex_failed"
    assert "killed by SIGKILL" in crashed.message and "last words" in crashed.message
    assert crashed.stderr_tail == "a\nlast words\n"
    silent = classify(RunOutcome(exit_code=3), now=NOW)
    assert "exit code 3" in silent.message and "printed nothing" in silent.message
    assert "exit -1" not in silent.message


def test_usage_errors_of_codex_are_launch_errors() -> None:
    outcome = RunOutcome(exit_code=2, stderr_tail="error: unexpected argument '--foo' found")
    error = classify(outcome, now=NOW)
    assert (error.kind, error.reason) == ("launch", "codex_usage_error")
    assert "unexpected argument" in error.message


def test_a_failure_seen_before_the_timeout_wins() -> None:
    outcome = RunOutcome(exit_code=None, timed_out=True, turn_failed=failure_text("usage_limit"))
    assert classify(outcome, now=NOW).reason == "usage_limit"


def test_an_unusable_image_says_where_it_was() -> None:
    """Regression guard: a bad base64 image in the session log was reported as a saved file."""
    saved = classify(RunOutcome(exit_code=0, invalid_image="the file is empty"), now=NOW)
    assert saved.message == "codex saved a file that is not a valid PNG: the file is empty."
    logged = classify(
        RunOutcome(exit_code=0, invalid_image="its base64 is not valid (x)", invalid_source="log"),
        now=NOW,
    )
    assert logged.reason == "invalid_image" and "saved no file" in logged.message
    assert "session log" in logged.message and "base64" in logged.message


def test_failed_image_call_beats_an_empty_leftover_file() -> None:
    """Regression guard: 0.125 leaves a 0-byte ig_*.png for a failed call."""
    outcome = RunOutcome(exit_code=0, image_status="failed", image_failure="server error",
                         invalid_image="the file is empty")  # fmt: skip
    error = classify(outcome, now=NOW)
    assert error.reason == "no_image" and "image call failed" in error.message


def test_real_usage_limit_text_with_typographic_apostrophe() -> None:
    """Regression guard: 0.169 writes "You\u2019ve" (U+2019), as recorded against the real CLI."""
    text = (
        "You\u2019ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit "
        "https://chatgpt.com/settings/usage to purchase more credits or try again at 8:57 AM."
    )
    error = classify(failed(text), now=NOW)
    assert error.reason == "usage_limit" and error.retry_at == "2026-11-22T08:57:00-05:00"


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("You've hit your usage limit. Try again at 3:45 PM.",
         "Wait until the limit resets at 15:45 (in 2 h 10 min), or check "),
        ("You've hit your usage limit.", "Wait until the limit resets (codex did not say when)"),
        ("You've hit your usage limit. Try again at Dec 8th, 2026 3:45 PM.",
         "Wait until the limit resets at Tue 08 Dec 15:45 (in 2 d 2 h)"),
        ("exceeded retry limit, last status: 429 Too Many Requests", "Wait a minute and run"),
    ],
)  # fmt: skip
def test_a_quota_hint_says_when_in_local_time_and_how_long(text: str, hint: str) -> None:
    """Only --json printed retry_at: the hint itself now says when, in the user's local time."""
    now = dt.datetime(2026, 12, 6, 13, 35, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    error = classify(RunOutcome(exit_code=1, turn_failed=text), now=now)
    assert error.hint.startswith(hint), error.hint
    assert "retry_at" not in error.hint and "retry_after_s" not in error.hint


def test_waits_in_words() -> None:
    from codex_cli_image.failures import wait_text

    assert [wait_text(s) for s in (0, 45, 60, 61, 3600, 7800, 86400, 90000)] == [
        "0 s", "45 s", "1 min", "2 min", "1 h", "2 h 10 min", "1 d", "1 d 1 h",
    ]  # fmt: skip
