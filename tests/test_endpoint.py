"""Refusals of the images endpoint, as codex passes them on: parsed and sorted (pure), from the
texts recorded from the real CLI and from every refusal shape the mock backend serves."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from codex_cli_image.endpoint import (
    find_endpoint_failure,
    http_log_line,
    parse_endpoint_failure,
    resend_warnings,
    router_failure,
    rust_log,
)
from codex_cli_image.failures import RunOutcome, classify
from codex_cli_image.testing.backend import IMAGE_REFUSALS, image_refusal
from codex_cli_image.testing.fake_codex import _rust_debug

from helpers import FIXTURES, REFUSALS

NOW = dt.datetime(2026, 11, 21, 14, 0, tzinfo=dt.timezone.utc)
REFUSAL_RECORDINGS = sorted(
    p for p in FIXTURES.glob("codex-*/*.json") if "refused" in p.stem or "moderation" in p.stem
)


def codex_line(status: int, phrase: str, body: dict[str, object] | str | None) -> str:
    """The line codex writes for a refused image call (Rust Debug of the body)."""
    if body is None:
        return f"image generation failed: http {status} {phrase}: None"
    text = body if isinstance(body, str) else json.dumps(body)
    return f"image generation failed: http {status} {phrase}: Some({_rust_debug(text)})"


def sort(line: str, **outcome: object) -> object:
    outcome = {"image_status": "failed", **outcome}
    return classify(RunOutcome(exit_code=0, image_failure=line, **outcome), now=NOW)  # type: ignore[arg-type]


def recorded_lines(path: Path) -> list[str]:
    """Every failure line a recording holds: the tool call's output and codex's stderr."""
    transcript = json.loads(path.read_text("utf-8"))
    lines = list(transcript.get("stderr", []))
    for record in transcript["image_records"]:
        output = record["payload"].get("output")
        for part in output if isinstance(output, list) else [output]:
            text = part.get("text") if isinstance(part, dict) else part
            if isinstance(text, str) and "image generation failed" in text:
                lines.append(text)
    return lines


def test_a_recorded_stderr_line_parses_to_the_backend_error() -> None:
    (line,) = json.loads((FIXTURES / "codex-0.171.0/moderation_code_mode.json").read_text())[
        "stderr"
    ]
    failure = parse_endpoint_failure(find_endpoint_failure(line) or "")
    assert failure.status == 400 and failure.code == "moderation_blocked"
    assert failure.type == "image_generation_user_error"
    assert failure.message and failure.message.startswith("Your request was rejected")


@pytest.mark.parametrize("path", REFUSAL_RECORDINGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_refusals_are_sorted(path: Path) -> None:
    """Each text the real CLI recorded (stderr, and the untruncated stderr copy of the tool's
    output) sorts as what the backend said."""
    expected = ("input", "content_policy") if "moderation" in path.stem else (
        "auth", "image_generation_refused")  # fmt: skip
    lines = [line for line in recorded_lines(path) if not line.endswith("…")]  # cut at 200
    if path.parent.name in ("codex-0.125.0", "codex-0.142.0"):
        assert lines == []  # the hosted tool: no images endpoint, no such line
        return
    assert lines
    for line in lines:
        error = sort(find_endpoint_failure(line) or "")
        assert (error.kind, error.reason) == expected, line  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", IMAGE_REFUSALS)
def test_every_refusal_shape_is_sorted(name: str) -> None:
    status, body = image_refusal(name)
    phrase = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests",
              500: "Internal Server Error"}[status]  # fmt: skip
    now = dt.datetime.now(dt.timezone.utc)
    line = codex_line(status, phrase, body)
    error = classify(RunOutcome(exit_code=0, image_status="failed", image_failure=line), now=now)
    kind, reason, _, words, retry_after = REFUSALS[name]
    assert (error.kind, error.reason) == (kind, reason)
    assert words in error.message and f"({status})" in error.message
    if retry_after is None:
        assert error.retry_after_s is None and error.retry_at is None
    else:
        assert error.retry_after_s is not None and retry_after - 5 <= error.retry_after_s
        assert error.retry_after_s <= retry_after and error.retry_at


def test_usage_limit_reset_time_from_the_body() -> None:
    resets_at = NOW.timestamp() + 3600
    body = {"error": {"type": "usage_limit_reached", "message": "limit", "resets_at": resets_at}}
    error = sort(codex_line(429, "Too Many Requests", body))
    assert error.retry_at == "2026-11-21T15:00:00+00:00" and error.retry_after_s == 3600.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "body", "kind", "reason"),
    [
        (400, {"error": {"message": "Invalid size '9x9'.", "type": "invalid_request_error"}},
         "input", "image_request_rejected"),
        (401, None, "auth", "unauthorized"),
        (403, "<html>Forbidden</html>", "auth", "image_generation_refused"),
        (429, {"error": {"message": "Slow down."}}, "quota", "rate_limited"),
        (429, {"error": {"code": "insufficient_quota", "message": "No credits."}}, "quota",
         "credits_exhausted"),
        (502, "Bad gateway", "transient", "backend_error"),
        (503, None, "transient", "backend_error"),
        (413, {"detail": "Request entity too large"}, "input", "image_request_rejected"),
    ],
)  # fmt: skip
def test_the_status_decides_when_the_body_does_not(
    status: int, body: dict[str, object] | str | None, kind: str, reason: str
) -> None:
    error = sort(codex_line(status, "Whatever", body))
    assert (error.kind, error.reason) == (kind, reason)  # type: ignore[attr-defined]


def test_the_message_quotes_the_backend_and_redacts_secrets() -> None:
    body = {"error": {"message": "Bad token sk-proj-abcdefghijklmnopqrstuvwxyz0123 refused."}}
    error = sort(codex_line(401, "Unauthorized", body))
    message = error.message  # type: ignore[attr-defined]
    assert "Bad token" in message and "[redacted]" in message and "abcdefghij" not in message


def test_rust_debug_escapes_round_trip() -> None:
    body = 'quote " backslash \\ newline \n tab \t bell \x07 fox \U0001f98a'
    failure = parse_endpoint_failure(codex_line(400, "Bad Request", body))
    assert failure.body == body and failure.message == body.strip()
    braced = parse_endpoint_failure('image generation failed: http 400 X: Some("a\\u{1f98a}b")')
    assert braced.body == "a\U0001f98ab"


def test_lines_that_are_not_refusals() -> None:
    assert find_endpoint_failure("ERROR codex_core::tools::router: error=something else") is None
    odd = parse_endpoint_failure("image generation failed: the decoder exploded")
    assert odd.status is None and odd.text.endswith("exploded")
    line = find_endpoint_failure("2026 WARN x\n2026 ERROR y: error=" + codex_line(403, "F", None))
    assert line is not None and parse_endpoint_failure(line).status == 403


def test_a_turn_failure_outranks_the_image_call() -> None:
    """A failed turn (here: the usage limit) is what ended the run, whatever the tool said."""
    error = classify(
        RunOutcome(exit_code=1, turn_failed="You've hit your usage limit. Try again later.",
                   image_failure=codex_line(500, "Internal Server Error", None)),
        now=NOW,
    )  # fmt: skip
    assert error.reason == "usage_limit"


def test_the_refusal_is_found_on_stderr_alone() -> None:
    """Without a rollout record (a missing or unflushed log), codex's stderr line still tells."""
    stderr = "2026-12-01T22:10:17Z ERROR codex_core::tools::router: error=" + codex_line(
        429, "Too Many Requests", image_refusal("rate_limited")[1]
    )
    error = classify(RunOutcome(exit_code=0, stderr_tail=stderr), now=NOW)
    assert (error.kind, error.reason, error.retry_after_s) == ("quota", "rate_limited", 12.0)


def test_a_failure_line_the_model_wrote_sorts_nothing() -> None:
    """#29: a script prints or throws codex's line for a usage limit of six days; codex records
    no failed image call and writes no stderr line of its own: a plain failure, no wait."""
    forged = codex_line(429, "Too Many Requests", image_refusal("usage_limit")[1])
    for outcome in (
        RunOutcome(exit_code=0, image_failure=forged),  # the script's output alone
        RunOutcome(exit_code=0, agent_messages=(forged,)),
        # Inside another error line of codex's, not at its start.
        RunOutcome(
            exit_code=0,
            stderr_tail=f"x ERROR codex_core::tools::router: error=unsupported call: {forged}",
        ),  # fmt: skip
    ):
        error = classify(outcome, now=NOW)
        assert (error.kind, error.reason, error.retry_after_s) == ("transient", "no_image", None)
    assert router_failure(f"2026-12-01T22:10:17Z ERROR codex_core::tools::router: error={forged}")


def test_no_wait_outlasts_the_usage_windows_codex_recorded() -> None:
    """#29: a usage limit is waited for no longer than the last window codex recorded (its
    session log's rate_limits) resets, and never more than a week."""

    def limit(seconds: float) -> str:
        body = {"error": {"type": "usage_limit_reached", "message": "limit",
                          "resets_in_seconds": seconds}}  # fmt: skip
        return codex_line(429, "Too Many Requests", body)

    error = sort(limit(518400), limits_reset_at=NOW.timestamp() + 3 * 3600)
    assert (error.reason, error.retry_after_s) == ("usage_limit", 3 * 3600.0)  # type: ignore[attr-defined]
    assert "(in 3 h)" in error.hint  # type: ignore[attr-defined]
    assert sort(limit(518400)).retry_after_s == 518400.0  # type: ignore[attr-defined]
    assert sort(limit(30 * 86400)).retry_after_s == 7 * 86400.0  # type: ignore[attr-defined]
    text = "You've hit your usage limit. Try again in 20 days."
    turn = classify(RunOutcome(exit_code=1, turn_failed=text,
                               limits_reset_at=NOW.timestamp() + 600), now=NOW)  # fmt: skip
    assert turn.retry_after_s == 600.0


# --- #31: codex's resends of the images request, counted from its HTTP log -------------------

_HTTP = (
    b"2026-12-07T12:09:53.631520Z DEBUG codex_http_client::client: Request completed method=POST "
    b"url=https://127.0.0.1:35111/backend-api/codex/images/generations status=500 Internal "
    b'Server Error headers={"server": "BaseHTTP/0.6 Python/3.11.7", "content-length": "133"} '
    b"version=HTTP/1.1"
)  # as 0.171 writes it (0.149 and 0.169 alike)


def test_codex_http_log_lines_are_told_apart() -> None:
    assert http_log_line(_HTTP) is True
    assert http_log_line(_HTTP.replace(b"images/generations", b"images/edits")) is True
    assert http_log_line(_HTTP.replace(b"method=POST", b"method=GET")) is False
    assert http_log_line(_HTTP.replace(b"images/generations", b"codex/responses")) is False
    assert http_log_line(_HTTP.replace(b"completed", b"failed")) is True
    # A model's text quoting the line is not codex's line.
    assert http_log_line(b"ERROR codex_core: said " + _HTTP) is None
    assert http_log_line(b"plain text") is None


def test_rust_log_keeps_the_users_directives() -> None:
    assert rust_log(None) == "error,codex_http_client::client=debug"
    assert rust_log("  ") == "error,codex_http_client::client=debug"
    assert rust_log("info,") == "info,codex_http_client::client=debug"
    assert resend_warnings(0) == resend_warnings(1) == ()
    (warning,) = resend_warnings(3)
    assert "3 times" in warning and "more than one image" in warning


def test_coloured_and_span_prefixed_http_lines_are_read_too() -> None:
    """FORCE_COLOR colours codex's stderr even on a pipe (we pass --color never, but a line is
    read either way), and a user's RUST_LOG=info puts codex's span before the target."""
    coloured = (b"\x1b[2m2026-12-07T12:09:53Z\x1b[0m \x1b[34mDEBUG\x1b[0m \x1b[2mcodex_http_client"
                b"::client\x1b[0m: Request completed method=POST url=https://x/backend-api/codex/"
                b"images/generations status=200 OK headers={}")  # fmt: skip
    spanned = (b"2026-12-07T12:09:53Z DEBUG codex.exec{thread.id=019a}: codex_http_client::client:"
               b" Request completed method=POST url=https://x/backend-api/codex/images/edits "
               b"status=200 OK")  # fmt: skip
    assert http_log_line(coloured) is True and http_log_line(spanned) is True
