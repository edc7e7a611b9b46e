"""The one exception tree of codex-cli-image, grouped by what the caller should do.

    CodexImageError            every error this package raises
    ├── InputError             kind "input":     fix the request (prompt, paths, options)
    ├── LaunchError            kind "launch":    install codex or point us at it
    ├── AuthError              kind "auth":      fix the login or the Codex configuration
    ├── QuotaError             kind "quota":     wait (see ``retry_after_s`` / ``retry_at``)
    └── TransientError         kind "transient": try again

Every error carries a stable ``reason`` code, a one-sentence message, a ``hint`` saying what to do
next, the ``exit_code`` the ``codex-image`` command exits with for it, and whatever evidence there
is (codex's own exit code as ``codex_exit_code``, last stderr lines, codex version, thread id).
Messages and evidence never contain tokens or keys.
"""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass
from typing import ClassVar, Literal

Kind = Literal["input", "launch", "auth", "quota", "transient"]

EXIT_CODES: dict[Kind, int] = {"input": 2, "auth": 3, "quota": 4, "transient": 5, "launch": 6}
"""The exit code of the ``codex-image`` command for each kind (stable, in the README)."""

__all__ = [
    "EXIT_CODES",
    "AuthError",
    "CodexImageError",
    "InputError",
    "Kind",
    "LaunchError",
    "NEVER_RETRIED",
    "QuotaError",
    "RetryRule",
    "TransientError",
    "retry_rule",
]


# What a credential looks like when a program echoes one (JWTs: id and access tokens; OpenAI
# keys; bearer headers; long key=value secrets). Messages quote codex's own output, which we do
# not control, so every error text passes through this before anyone can print it.
_SECRETS = re.compile(
    r"(?P<label>(?i:\b(?:bearer|basic)\s+"
    r"|(?:token|api[_-]?key|secret|password)[\"']?\s*[:=]\s*[\"']?))"
    r"[A-Za-z0-9._~+/=-]{8,}"
    # A JWT, whole or cut short (a message cut at 300 characters can end inside one).
    r"|eyJ[A-Za-z0-9_-]{10,}(?:\.[A-Za-z0-9_-]*){0,2}"
    # Key-shaped: long, with a digit, not part of a path or file name (rk-2024-cards.png).
    r"|(?<![\w/\\.-])(?:sk|rk|sess)-(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}(?![A-Za-z0-9_-]|\.\w)"
    # The user and password of a URL (https://user:password@host).
    r"|(?<=://)[^/\s@:]+:[^/\s@]*(?=@)"
)


def redact(text: str) -> str:
    """``text`` with anything shaped like a token or key replaced by ``[redacted]`` (a label
    such as ``Bearer`` or ``"refresh_token":`` is kept, so the message still says what it was)."""
    return _SECRETS.sub(lambda match: (match.group("label") or "") + "[redacted]", text)


class CodexImageError(Exception):
    """Base of every error raised by codex-cli-image."""

    kind: ClassVar[Kind]
    # Only quota errors know when to come back; the keys exist on every error for stable JSON.
    retry_after_s: float | None = None
    retry_at: str | None = None

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        hint: str,
        codex_exit_code: int | None = None,
        stderr_tail: str | None = None,
        codex_version: str | None = None,
        thread_id: str | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.hint = redact(hint)
        self.codex_exit_code = codex_exit_code
        self.stderr_tail = None if stderr_tail is None else redact(stderr_tail)
        self.codex_version = codex_version
        self.thread_id = thread_id

    @property
    def exit_code(self) -> int:
        """The exit code of the ``codex-image`` command for this error (codex's own is
        :attr:`codex_exit_code`)."""
        return EXIT_CODES[self.kind]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments defeat Exception's default pickling (process pools need it).
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))

    def to_dict(self) -> dict[str, object]:
        """The error as a JSON-ready mapping (the CLI's ``--json`` error object)."""
        return {
            "kind": self.kind,
            "reason": self.reason,
            "message": self.message,
            "hint": self.hint,
            "retry_after_s": self.retry_after_s,
            "retry_at": self.retry_at,
            "retryable": retry_rule(self).caller,
            "exit_code": self.exit_code,
            "codex_exit_code": self.codex_exit_code,
            "thread_id": self.thread_id,
            "codex_version": self.codex_version,
        }


class InputError(CodexImageError):
    """The request itself is wrong; retrying it unchanged cannot help."""

    kind = "input"

    def at(self, where: str | None) -> InputError:
        """This error with ``where`` (e.g. ``"line 3"``) before its message."""
        if where is None:
            return self
        return InputError(f"{where}: {self.message}", reason=self.reason, hint=self.hint)


class LaunchError(CodexImageError):
    """The codex executable cannot be found or started."""

    kind = "launch"


class AuthError(CodexImageError):
    """The login or configuration cannot make images; the user must act."""

    kind = "auth"


class QuotaError(CodexImageError):
    """A usage or rate limit was hit; waiting is the fix."""

    kind = "quota"

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        hint: str,
        retry_after_s: float | None = None,
        retry_at: str | None = None,
        codex_exit_code: int | None = None,
        stderr_tail: str | None = None,
        codex_version: str | None = None,
        thread_id: str | None = None,
    ) -> None:
        super().__init__(
            message,
            reason=reason,
            hint=hint,
            codex_exit_code=codex_exit_code,
            stderr_tail=stderr_tail,
            codex_version=codex_version,
            thread_id=thread_id,
        )
        self.retry_after_s = retry_after_s
        self.retry_at = retry_at


class TransientError(CodexImageError):
    """A failure that may not happen again; retrying is reasonable."""

    kind = "transient"


# --- the one retry rule ----------------------------------------------------------------------

NEVER_RETRIED = frozenset(
    {"timeout", "invalid_image", "image_too_large", "network_blocked", "internal_error"}
)
"""Transient reasons nobody runs codex again for: an image may already have been made and paid
for (a timeout, an image that failed our checks, a bug of ours after the run), or a retry from
here cannot help (a blocked network)."""
_CALLER_MAY_RETRY = frozenset({"rate_limited", "cancelled", "stopped"})
"""The only failures a caller may send again: the backend refused before making anything (429,
after its wait), or the run was ended before an image (a stopping server, a closed client)."""


@dataclass(frozen=True, slots=True)
class RetryRule:
    """Who may run codex again after ``error``, and when (:func:`retry_rule`)."""

    ours: bool
    """The pipeline runs another attempt itself (within ``retries``)."""
    caller: bool
    """A caller (an SDK, an agent, a batch) may send the request again once ours gave up: never
    for a failure we retry ourselves (that would multiply our attempts) nor one that may have
    paid for an image."""
    after_s: float | None
    """How long to wait first, when codex said."""


def retry_rule(error: CodexImageError) -> RetryRule:
    """The one place that decides whether, by whom and after how long ``error`` is retried: the
    pipeline, the HTTP status and ``x-should-retry``/``Retry-After``, MCP, Hermes and the CLI's
    JSON follow it."""
    caller = error.reason in _CALLER_MAY_RETRY
    ours = isinstance(error, TransientError) and error.reason not in NEVER_RETRIED and not caller
    return RetryRule(ours, caller, error.retry_after_s)


def internal_error(exc: BaseException) -> TransientError:
    """A bug of ours, as an error a caller can handle (one batch job, one MCP call) instead of
    the end of everything; log ``exc`` with its traceback where it is caught."""
    return TransientError(
        f"Unexpected error: {type(exc).__name__}: {exc}",
        reason="internal_error",
        hint="Retry; if it happens again, report it with the log of the codex_cli_image logger.",
    )


def log_unexpected(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log a bug of ours with its traceback, redacted: exception texts may quote a secret (a URL
    with a password, a token in codex's output)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    logger.error("%s\n%s", what, redact(text).rstrip())


def _rebuild(
    cls: type[CodexImageError], args: tuple[object, ...], state: dict[str, object]
) -> CodexImageError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error
