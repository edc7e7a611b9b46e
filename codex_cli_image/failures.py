"""Sort a codex run that produced no image into auth, quota, input or transient (pure).

The texts are codex's own (codex-facts section 7). Status numbers only match as whole tokens,
so a request id like ``req-401-abc`` is not a 401.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from .endpoint import (
    EndpointFailure,
    find_endpoint_failure,
    parse_endpoint_failure,
    router_failure,
)
from .errors import (
    AuthError,
    CodexImageError,
    InputError,
    LaunchError,
    QuotaError,
    TransientError,
)
from .prompt import SENTINEL
from .usage import UsageLimits

__all__ = ["SENTINEL", "RunOutcome", "classify", "error_lines", "parse_retry", "recorded_limit"]


_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
)}  # fmt: skip
_AT = re.compile(
    r"try again at\s+(?:(?P<month>[A-Za-z]{3})[a-z]*\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+"
    r"(?P<year>\d{4})\s+)?(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AaPp]\.?[Mm]\.?)?",
    re.IGNORECASE,
)
# "try again in 3 days 6 hours", "in 45 minutes", and the short forms "in 12s", "1m30s", "3h".
_UNITS = r"(?:days?|d|hours?|hrs?|h|minutes?|mins?|m(?!s)|seconds?|secs?|s|ms)"
_IN = re.compile(
    rf"try again in\s+(?P<spec>(?:\d+(?:\.\d+)?\s*{_UNITS}(?![a-z])[\s,]*(?:and\s+)?)+)", re.I
)
_UNIT = re.compile(rf"(\d+(?:\.\d+)?)\s*({_UNITS})", re.I)
_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_MINUTE = dt.timedelta(minutes=1)


def _number(code: int) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){code}(?![\w-])")


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a finished (or stopped) codex run left behind, for :func:`classify`."""

    exit_code: int | None
    """The exit status; negative for a signal (POSIX); None when it never ended by itself."""
    timed_out: bool = False
    turn_failed: str | None = None
    errors: tuple[str, ...] = ()
    """Messages of ``error`` events, other than ``Reconnecting...`` notices."""
    agent_messages: tuple[str, ...] = ()
    stderr_tail: str = ""
    image_status: str | None = None
    """Status of the image record in the session rollout (``completed``, ``failed``), if any."""
    image_failure: str | None = None
    invalid_image: str | None = None
    """Why the image that was found is not a valid PNG."""
    invalid_source: Literal["file", "log"] = "file"
    """Where it was found: a file codex saved, or the session log (hosted tools)."""
    invalid_path: str | None = None
    """The file codex saved that is not a valid PNG."""
    image_too_large: bool = False
    """That file is larger than this tool reads (it may well be a good image)."""
    timeout_s: float | None = None
    codex_version: str | None = None
    thread_id: str | None = None
    limits_reset_at: float | None = None
    """When the last usage window codex recorded resets (Unix time): no wait goes past it."""


@dataclass(frozen=True, slots=True)
class _Rule:
    cls: type[CodexImageError]
    reason: str
    patterns: tuple[re.Pattern[str], ...]
    message: str
    hint: str


def _p(*texts: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(text, re.IGNORECASE) for text in texts)


_SIGN_IN_AGAIN = "Sign in again: run `codex logout`, then `codex login` and choose ChatGPT."
# First match wins; quota before auth because usage-limit texts mention upgrading plans.
_RULES = (
    _Rule(QuotaError, "usage_limit",
          _p(r"hit your usage limit", r"usage limit (?:reached|exceeded)"),
          "The ChatGPT usage limit for Codex is reached.",
          "Wait until the limit resets (see retry_at), or check https://chatgpt.com/codex/settings/usage."),
    _Rule(QuotaError, "credits_exhausted", _p(r"out of credits", r"spend cap", r"quota exceeded"),
          "The workspace has no credits left for Codex.",
          "Add credits or raise the spend cap, or wait for the next billing cycle."),
    _Rule(QuotaError, "plan_not_included", _p(r"to use codex with your chatgpt plan"),
          "This ChatGPT plan does not include Codex.",
          "Upgrade the ChatGPT plan (Plus or higher) or sign in with another account."),
    _Rule(QuotaError, "rate_limited", (_number(429), *_p(r"too many requests", r"rate limit")),
          "The backend is rate limiting requests (429).",
          "Wait (see retry_after_s) and run fewer generations at once (about 2 at a time is "
          "safe)."),
    _Rule(AuthError, "refresh_failed",
          _p(r"could not be refreshed", r"refresh token", r"log out and sign in again",
             r"signed in to another account"),
          "Codex could not refresh the ChatGPT login.", _SIGN_IN_AGAIN),
    _Rule(AuthError, "model_not_supported",
          _p(r"model is not supported when using codex with a chatgpt account"),
          "The chosen model is not available with a ChatGPT login.",
          "Choose another model (drop --model / model=, or fix `model` in config.toml)."),
    _Rule(AuthError, "unauthorized",
          (_number(401), *_p(r"\bunauthorized\b", r"missing bearer", r"not logged in")),
          "The backend rejected the ChatGPT login (401).", _SIGN_IN_AGAIN),
    _Rule(InputError, "content_policy",
          _p(r"content[ _]policy", r"safety system", r"moderation", r"rejected by the safety"),
          "The image request was refused by the safety system.",
          "Rephrase the prompt; retrying the same prompt will not help."),
    _Rule(TransientError, "code_mode_host_crashed", _p(r"code-mode session closed"),
          "codex's code-mode host, which runs its image tool, crashed.",
          "Retry; if it keeps crashing, update codex (`npm install -g @openai/codex@latest`) and "
          "check the memory limit it runs under."),
    _Rule(TransientError, "disk_full", _p(r"no space left on device", r"disk quota exceeded"),
          "The disk codex writes to is full.",
          "Free some space where codex keeps its state (the codex home) and in the temporary "
          "folder, then retry."),
    _Rule(AuthError, "codex_home_read_only", _p(r"read-only file system"),
          "Codex cannot write to its home (a read-only file system).",
          "Point CODEX_HOME at a writable folder (codex keeps its login, sessions and images "
          "there)."),
    _Rule(TransientError, "network_blocked", _p(r"blocked by cloudflare"),
          "The backend blocked this network (Cloudflare).",
          "Try from another network; retrying from this one will not help."),
    _Rule(TransientError, "capacity", _p(r"at capacity", r"high demand", r"overloaded"),
          "The model is at capacity.", "Retry in a few minutes."),
    _Rule(TransientError, "stream_error",
          _p(r"stream disconnected", r"connection failed", r"error sending request",
             r"error while reading the server response", r"request timed out",
             r"workspace routing discovery failed", r"connection (?:reset|refused)"),
          "The connection to the backend failed.", "Check the network connection and retry."),
)  # fmt: skip
_REFUSED = _p(r"image_generation_not_supported", r"not supported", r"forbidden") + (_number(403),)


def classify(outcome: RunOutcome, *, now: dt.datetime) -> CodexImageError:
    """The error for a run that produced no valid image. ``now``: aware local time."""
    # codex's own words only: a failure line counts when codex recorded the failed image call.
    recorded = outcome.image_failure if outcome.image_status == "failed" else None
    texts = [t for t in (outcome.turn_failed, *outcome.errors, recorded) if t]
    if outcome.timed_out and not texts:
        return _timeout(outcome)
    if outcome.exit_code == 2 and outcome.thread_id is None:
        return _error(
            LaunchError, outcome,
            "codex rejected its arguments" + _said(outcome.stderr_tail),
            "codex_usage_error",
            "This codex may not support an option we pass (or the model name): update it "
            "with `npm install -g @openai/codex@latest`.",
        )  # fmt: skip
    # Only the lines codex writes for a fatal error: warnings and info lines before them may
    # mention old retries (429) or moderation settings; a death by signal is just that.
    fatal = error_lines(outcome.stderr_tail) if (outcome.exit_code or 0) > 0 else []
    texts_and_stderr = [*texts, *fatal]
    endpoint = _endpoint_failure(outcome)
    if endpoint is not None and endpoint.status is not None and not outcome.turn_failed:
        return _endpoint_error(endpoint, outcome, now)
    for rule in _RULES:
        text = _first_match(rule.patterns, texts_and_stderr)
        if text is None:
            continue
        if rule.cls is QuotaError:
            error = _error(QuotaError, outcome, rule.message, rule.reason, rule.hint)
            return _timed(error, _capped(parse_retry(text, now), outcome, now), now)
        message = f"{rule.message} codex said: {_short(text)}"
        return _error(rule.cls, outcome, message, rule.reason, rule.hint)
    if outcome.image_status == "failed":
        if _first_match(_REFUSED, [outcome.image_failure or ""]):
            return _error(
                AuthError, outcome, "The backend refused to generate images for this account.",
                "image_generation_refused",
                "Check that the ChatGPT plan and workspace allow image generation.",
            )  # fmt: skip
        # Old versions leave an empty file for a failed call: the failure is the news.
        return _error(
            TransientError, outcome, "codex's image call failed"
            + (f": {_short(outcome.image_failure)}" if outcome.image_failure else "."),
            "no_image", "Retry; if it keeps happening, make the prompt shorter and more direct.",
        )  # fmt: skip
    if outcome.timed_out:
        return _timeout(outcome)
    if any(SENTINEL in message for message in outcome.agent_messages):
        return _error(
            AuthError, outcome, "codex offered no image tool to the model.",
            "image_tool_unavailable",
            "Run `codex-image doctor`: images need a ChatGPT login on a paid plan with the "
            "image_generation feature on.",
        )  # fmt: skip
    if outcome.invalid_image and outcome.image_too_large:
        return _error(TransientError, outcome, f"codex saved {outcome.invalid_path}, which is "
                      f"too large to check: {outcome.invalid_image}.", "image_too_large",
                      "The image is left where codex saved it: open it from there (making it "
                      "again would make another as large).")  # fmt: skip
    if outcome.invalid_image:
        if outcome.invalid_source == "log":
            message = ("codex saved no file, and the image in its session log is not usable: "
                       f"{outcome.invalid_image}.")  # fmt: skip
        else:
            where = f" ({outcome.invalid_path}, left there)" if outcome.invalid_path else ""
            message = f"codex saved a file that is not a valid PNG{where}: {outcome.invalid_image}."
        return _error(TransientError, outcome, message, "invalid_image", "Retry.")
    if outcome.exit_code == 0:
        failed = " (the image call failed)" if outcome.image_status == "failed" else ""
        return _error(
            TransientError, outcome, f"codex finished without producing an image{failed}.",
            "no_image", "Retry; if it keeps happening, make the prompt shorter and more direct.",
        )  # fmt: skip
    return _error(
        TransientError, outcome,
        f"codex failed ({_exit_text(outcome.exit_code)})" + _said(outcome.stderr_tail),
        "codex_failed",
        "Retry; if it keeps failing, run `codex exec` by hand to see the whole error.",
    )  # fmt: skip


def _timeout(outcome: RunOutcome) -> TransientError:
    limit = f" within {outcome.timeout_s:g} s" if outcome.timeout_s else ""
    return _error(TransientError, outcome, f"codex did not deliver an image{limit}.", "timeout",
                  "Retry, or allow more time (--timeout, timeout=).")  # fmt: skip


def _endpoint_failure(outcome: RunOutcome) -> EndpointFailure | None:
    """The images endpoint's refusal, as codex recorded it: its own stderr line (codex exits 0
    after one, so stderr is read whatever the exit), else the output of an image call codex
    recorded as failed. A failure line with neither behind it can only be the model's words (a
    script can print or throw one): it sorts nothing."""
    line = router_failure(outcome.stderr_tail)
    if line is None and outcome.image_status == "failed":
        line = find_endpoint_failure(outcome.image_failure or "")
    return parse_endpoint_failure(line) if line is not None else None


# The backend's error codes and types (lowercase) that decide the class before the status does.
_CONTENT_POLICY = frozenset({"moderation_blocked", "image_generation_user_error",
                             "content_policy_violation", "safety_violation"})  # fmt: skip
_USAGE_LIMIT = frozenset({"usage_limit_reached", "usage_limit_exceeded"})
_NO_CREDITS = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
_RATE_LIMIT = frozenset({"rate_limit_exceeded", "rate_limit_error", "requests", "tokens"})


def _endpoint_error(
    failure: EndpointFailure, outcome: RunOutcome, now: dt.datetime
) -> CodexImageError:
    """Sort a refusal of the images endpoint by the backend's code and type, then its status."""
    status = failure.status or 0
    words = {word for word in (failure.code, failure.type) if word}
    said = f" The backend said ({status}): {_short(failure.message)}" if failure.message else (
        f" The backend answered {status} with no explanation."
    )  # fmt: skip
    if words & _CONTENT_POLICY:
        return _error(InputError, outcome, "The safety system refused the image request." + said,
                      "content_policy", "Rephrase the prompt; retrying the same prompt will "
                      "not help.")  # fmt: skip
    if words & _USAGE_LIMIT or (status == 429 and "usage limit" in (failure.message or "").lower()):
        error: CodexImageError = _error(
            QuotaError, outcome, "The ChatGPT usage limit for images is reached." + said,
            "usage_limit", "Wait until the limit resets (see retry_at), or check "
            "https://chatgpt.com/codex/settings/usage.",
        )  # fmt: skip
        return _with_retry(error, failure, outcome, now)
    if words & _NO_CREDITS:
        error = _error(QuotaError, outcome, "The workspace has no credits left for images." + said,
                       "credits_exhausted", "Add credits or raise the spend cap, or wait for "
                       "the next billing cycle.")  # fmt: skip
        return _with_retry(error, failure, outcome, now)
    if status == 429 or words & _RATE_LIMIT:
        error = _error(QuotaError, outcome, "The images endpoint is rate limiting requests." + said,
                       "rate_limited", "Wait (see retry_after_s) and run fewer generations at "
                       "once (about 2 at a time is safe).")  # fmt: skip
        return _with_retry(error, failure, outcome, now)
    if status == 401:
        return _error(AuthError, outcome, "The images endpoint rejected the ChatGPT login." + said,
                      "unauthorized", _SIGN_IN_AGAIN)  # fmt: skip
    if status == 403:
        return _error(AuthError, outcome, "The backend refused to generate images for this "
                      "account." + said, "image_generation_refused", "Check that the ChatGPT "
                      "plan and workspace allow image generation (`codex-image doctor`); "
                      "retrying will not help.")  # fmt: skip
    if 400 <= status < 500:
        return _error(InputError, outcome, "The images endpoint refused the request as made."
                      + said, "image_request_rejected", "Change the prompt or the reference "
                      "images; retrying the same request will not help.")  # fmt: skip
    return _error(TransientError, outcome, "The images endpoint failed." + said, "backend_error",
                  "Retry in a minute; codex already retried the request itself.")  # fmt: skip


def _with_retry(
    error: CodexImageError, failure: EndpointFailure, outcome: RunOutcome, now: dt.datetime
) -> CodexImageError:
    """When to come back: the body's reset time or delay, else the message's "try again ..."."""
    if failure.resets_at is not None:
        at = dt.datetime.fromtimestamp(failure.resets_at, tz=now.tzinfo).replace(microsecond=0)
        retry: tuple[dt.datetime, float] | None = at, max(0.0, (at - now).total_seconds())
    elif failure.resets_in_s is not None:
        seconds = failure.resets_in_s
        retry = (now + dt.timedelta(seconds=seconds)).replace(microsecond=0), seconds
    else:
        retry = parse_retry(failure.message or failure.body or "", now)
    return _timed(error, _capped(retry, outcome, now), now)


MAX_WAIT_S = 7 * 24 * 3600.0
"""No wait is longer than codex's longest usage window (a week)."""


def _capped(
    retry: tuple[dt.datetime, float] | None, outcome: RunOutcome, now: dt.datetime
) -> tuple[dt.datetime, float] | None:
    """``retry``, but never later than the last usage window codex recorded resets, nor a week
    from now: a reset further away is not a limit codex reported."""
    if retry is None:
        return None
    latest = now.timestamp() + MAX_WAIT_S
    if outcome.limits_reset_at is not None and outcome.limits_reset_at > now.timestamp():
        latest = min(latest, outcome.limits_reset_at)
    at, seconds = retry
    if at.timestamp() <= latest:
        return retry
    capped = dt.datetime.fromtimestamp(latest, tz=now.tzinfo).replace(microsecond=0)
    return capped, max(0.0, (capped - now).total_seconds())


_WHEN_AT, _WHEN_IN = "(see retry_at)", "(see retry_after_s)"
"""Where a quota hint says when: filled in with the local time and the wait when known."""


def _timed(
    error: CodexImageError, retry: tuple[dt.datetime, float] | None, now: dt.datetime
) -> CodexImageError:
    """``error`` with when to come back (``retry``: the time and the seconds until then), in
    its fields and, in words the user can act on, in its hint."""
    if retry is None:
        error.hint = error.hint.replace(_WHEN_AT, "(codex did not say when)")
        error.hint = error.hint.replace(f"Wait {_WHEN_IN}", "Wait a minute")
        return error
    at, seconds = retry
    error.retry_at, error.retry_after_s = at.isoformat(), seconds
    local = at.astimezone(now.tzinfo)
    clock = f"{local:%H:%M}" if local.date() == now.date() else f"{local:%a %d %b %H:%M}"
    error.hint = error.hint.replace(_WHEN_AT, f"at {clock} (in {wait_text(seconds)})")
    error.hint = error.hint.replace(_WHEN_IN, wait_text(seconds))
    return error


def recorded_limit(usage: UsageLimits | None, now: dt.datetime) -> QuotaError | None:
    """A usage window codex recorded as used up (100 %) that resets later than ``now``: the
    next image would be refused until then, so it is answered as that usage limit. None when
    no window is full, or a full one names no reset still ahead (pure)."""
    window = None if usage is None else usage.reached
    if window is None or window.resets_at is None or window.resets_at <= now.timestamp():
        return None
    if window.resets_at - now.timestamp() > MAX_WAIT_S:
        return None
    at = dt.datetime.fromtimestamp(window.resets_at, tz=now.tzinfo).replace(microsecond=0)
    said = window.describe(now.timestamp(), now.tzinfo)
    error = QuotaError(
        f"The ChatGPT usage limit for images is reached (codex recorded: {said}).",
        reason="usage_limit",
        hint=f"Wait until the limit resets {_WHEN_AT}, or check "
        "https://chatgpt.com/codex/settings/usage.",
    )
    _timed(error, (at, max(0.0, (at - now).total_seconds())), now)
    return error


def wait_text(seconds: float) -> str:
    """A wait in words: ``45 s``, ``12 min``, ``2 h 10 min``, ``2 d 1 h``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = (seconds + 59) // 60  # rounded up: never earlier than the reset
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


_E = TypeVar("_E", bound=CodexImageError)


def _error(cls: type[_E], outcome: RunOutcome, message: str, reason: str, hint: str) -> _E:
    return cls(
        message,
        reason=reason,
        hint=hint,
        codex_exit_code=outcome.exit_code,
        stderr_tail=outcome.stderr_tail or None,
        codex_version=outcome.codex_version,
        thread_id=outcome.thread_id,
    )


def parse_retry(text: str, now: dt.datetime) -> tuple[dt.datetime, float] | None:
    """When a usage limit resets, from "try again at 3:45 PM", "... at Nov 23rd, 2026 3:45 PM" or
    "try again in 3 days 6 hours"; times are local (``now``'s zone). None when there is none."""
    match = _AT.search(text)
    if match:
        hour, minute = int(match["hour"]), int(match["minute"])
        ampm = (match["ampm"] or "").replace(".", "").upper()
        if ampm and not 1 <= hour <= 12 or hour > 23 or minute > 59:
            return None
        if ampm == "PM" and hour != 12:
            hour += 12
        elif ampm == "AM" and hour == 12:
            hour = 0
        if match["month"]:
            month = _MONTHS.get(match["month"][:3].lower())
            if month is None:
                return None
            try:
                at = now.replace(year=int(match["year"]), month=month, day=int(match["day"]),
                                 hour=hour, minute=minute, second=0, microsecond=0)  # fmt: skip
            except ValueError:
                return None
        else:
            at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if at <= now < at + _MINUTE:  # printed to the minute: it resets within this one
                at += _MINUTE
            elif at <= now:  # the time has passed today: it means tomorrow
                at += dt.timedelta(days=1)
        return at, max(0.0, (at - now).total_seconds())
    match = _IN.search(text)
    if match:
        seconds = 0.0
        for amount, unit in _UNIT.findall(match["spec"]):
            unit = unit.lower()
            seconds += float(amount) * (0.001 if unit == "ms" else _SECONDS[unit[0]])
        return (now + dt.timedelta(seconds=seconds)).replace(microsecond=0), seconds
    return None


def _first_match(patterns: Iterable[re.Pattern[str]], texts: Iterable[str]) -> str | None:
    for text in texts:
        if any(pattern.search(text) for pattern in patterns):
            return text
    return None


def _short(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# How codex reports what ended it on stderr: anyhow's "Error: ..." (and its "Caused by:" lines),
# clap's "error: ...", the exec printer's "ERROR: ...", a tracing line at level ERROR, a Rust
# panic or allocation failure. Tracing lines at other levels are not errors.
_ERROR_LINE = re.compile(
    r"^(?:error:|ERROR:?\s|\S+\s+ERROR\s|thread '.*' panicked|memory allocation of \d+ bytes)"
    r"|panicked at ",
    re.IGNORECASE,
)
_FRAME = re.compile(r"^\s*(?:\d+:\s|at\s+\S+:\d+|stack backtrace:|note: run with `RUST_BACKTRACE)")


def error_lines(stderr_tail: str) -> list[str]:
    """The lines of ``stderr_tail`` in which codex reports an error (pure): each error line,
    with the causes anyhow lists under it joined on."""
    found: list[str] = []
    in_causes = False
    for line in stderr_tail.splitlines():
        if _ERROR_LINE.search(line.strip()) and not _WARN_LEVEL.search(line):
            found.append(line.strip())
            in_causes = False
        elif found and line.strip() == "Caused by:":
            in_causes = True
        elif found and in_causes and line[:1].isspace() and line.strip():
            found[-1] += ": " + re.sub(r"^\s*\d+:\s*", "", line).strip()
        else:
            in_causes = False
    return found


_WARN_LEVEL = re.compile(r"^\S*\s*(?:WARN|INFO|DEBUG|TRACE)\s")


def _said(stderr_tail: str) -> str:
    """What codex said about its end: its last error line, else its last line that is not a
    backtrace frame (RUST_BACKTRACE=1 ends stderr with frames)."""
    errors = error_lines(stderr_tail)
    if errors:
        return f": {_short(errors[-1])}"
    lines = [line for line in stderr_tail.strip().splitlines() if line.strip()]
    lines = [line for line in lines if not _FRAME.match(line)] or lines
    return f": {_short(lines[-1])}" if lines else "; it printed nothing on stderr."
