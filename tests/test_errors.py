from __future__ import annotations

import pickle

import pytest

from codex_cli_image import (
    AuthError,
    CodexImageError,
    InputError,
    LaunchError,
    QuotaError,
    TransientError,
)
from codex_cli_image.errors import EXIT_CODES, redact

JSON_KEYS = {
    "kind", "reason", "message", "hint", "retry_after_s", "retry_at", "retryable", "exit_code",
    "codex_exit_code", "thread_id", "codex_version",
}  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "kind"),
    [
        (InputError, "input"),
        (LaunchError, "launch"),
        (AuthError, "auth"),
        (QuotaError, "quota"),
        (TransientError, "transient"),
    ],
)
def test_every_error_has_a_kind_and_stable_json(cls: type[CodexImageError], kind: str) -> None:
    error = cls("Something broke.", reason="some_reason", hint="Do this.", codex_exit_code=1)
    assert isinstance(error, CodexImageError) and error.kind == kind
    assert str(error) == "Something broke."
    data = error.to_dict()
    assert set(data) == JSON_KEYS
    assert data["kind"] == kind and data["reason"] == "some_reason" and data["hint"] == "Do this."
    # exit_code is the code `codex-image` exits with; codex's own is codex_exit_code.
    assert data["exit_code"] == EXIT_CODES[kind] == error.exit_code
    assert data["codex_exit_code"] == 1 == error.codex_exit_code
    assert repr(error) == f"{cls.__name__}(reason='some_reason', message='Something broke.')"


def test_quota_error_carries_when_to_come_back() -> None:
    error = QuotaError(
        "Usage limit reached.",
        reason="usage_limit",
        hint="Wait.",
        retry_after_s=120.0,
        retry_at="2026-11-21T15:45:00+00:00",
    )
    assert error.to_dict()["retry_after_s"] == 120.0
    assert error.retry_at == "2026-11-21T15:45:00+00:00"
    assert TransientError("x", reason="r", hint="h").retry_after_s is None


def test_errors_survive_pickling() -> None:
    """Regression guard: keyword-only arguments made errors unpicklable (process pools)."""
    error = QuotaError(
        "Limit.", reason="usage_limit", hint="Wait.", retry_after_s=5.0, codex_exit_code=1
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is QuotaError and copy.to_dict() == error.to_dict() and str(copy) == "Limit."


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("401: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2ln", "401: Bearer [redacted]"),
        ("id eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2ln end", "id [redacted] end"),
        ("Incorrect API key: sk-proj-abcdefghij1234567890.", "Incorrect API key: [redacted]."),
        ('{"refresh_token": "rt_0123456789abcdef"}', '{"refresh_token": "[redacted]"}'),
        ("api_key=abcdefgh12345678 and", "api_key=[redacted] and"),
        ("429 Too Many Requests, id: req-401-abc", "429 Too Many Requests, id: req-401-abc"),
        ("try again at 3:45 PM (https://chatgpt.com/codex/settings/usage)",
         "try again at 3:45 PM (https://chatgpt.com/codex/settings/usage)"),
        ("max_output_tokens: 12345678", "max_output_tokens: 12345678"),
        ("Could not write /u/rk-2024-holiday-cards-final01.png",
         "Could not write /u/rk-2024-holiday-cards-final01.png"),
        ("saved as sk-landscape-2024-final-version-3.png",
         "saved as sk-landscape-2024-final-version-3.png"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [redacted]"),
    ],
)  # fmt: skip
def test_secrets_in_quoted_codex_output_are_redacted(text: str, shown: str) -> None:
    assert redact(text) == shown
    error = TransientError(f"codex said: {text}", reason="x", hint="h", stderr_tail=text)
    assert error.message == f"codex said: {shown}" and error.stderr_tail == shown
    assert str(error) == error.message
