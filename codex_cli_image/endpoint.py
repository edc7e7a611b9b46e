"""What the images endpoint said when it refused an image, as codex passes it on (pure).

When the backend's images endpoint answers an error, codex 0.149+ exits 0 and writes the reason
in one line, the same wherever it appears (codex-facts section 4): the direct call's
``function_call_output``, the code-mode ``exec`` call's ``custom_tool_call_output`` (after
``Script error:``), and codex's stderr (``ERROR codex_core::tools::router: error=...``)::

    image generation failed: http 429 Too Many Requests: Some("{\"error\": {...}}")

The body is the backend's own, verbatim, inside a Rust ``Debug`` string (``None`` without one);
OpenAI-style bodies are ``{"error": {"message", "type", "code", ...}}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HTTP_LOG",
    "HTTP_TARGET",
    "EndpointFailure",
    "find_endpoint_failure",
    "http_log_line",
    "parse_endpoint_failure",
    "resend_warnings",
    "router_failure",
    "rust_log",
]

HTTP_LOG = "codex_http_client::client=debug"
"""The log directive that makes codex write a line per HTTP request it makes (0.149+), so that
its resends of the images request can be counted (codex-facts section 12): nothing else says
them."""

_PREFIX = "image generation failed:"
_LINE = re.compile(
    r"image generation failed: http (?P<status>\d{3})(?: (?P<phrase>[^:]*))?:\s*"
    r"(?:Some\((?P<body>\".*\")\)|None)?",
    re.DOTALL,
)
# codex's own stderr line for a failed tool call whose error is the images endpoint's refusal; the
# line must start that way (a model's text inside another tool's error is not one).
_ROUTER = re.compile(
    r"^\S*\s*ERROR codex_core::tools::router: error=(image generation failed: http \d{3}\b.*)$",
    re.MULTILINE,
)
_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|.)", re.DOTALL)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", '"': '"', "'": "'", "\\": "\\"}


@dataclass(frozen=True, slots=True)
class EndpointFailure:
    """One refusal of the images endpoint."""

    text: str
    """The line as codex wrote it (cut to 2000 characters)."""
    status: int | None = None
    body: str | None = None
    """The backend's body, unescaped."""
    code: str | None = None
    type: str | None = None
    message: str | None = None
    """The backend's own words: ``error.message`` of a JSON body, else the body itself."""
    resets_at: float | None = None
    """A usage limit's reset, as a Unix time."""
    resets_in_s: float | None = None


def find_endpoint_failure(text: str) -> str | None:
    """The last ``image generation failed: ...`` line in ``text`` (stderr, a tool's output)."""
    start = text.rfind(_PREFIX)
    if start < 0:
        return None
    end = text.find("\n", start)
    return text[start : end if end >= 0 else len(text)].strip()[:2000]


# One line per request with HTTP_LOG (0.149-0.171): the outcome, the method, the URL, then the
# response's headers (kept out of everything we pass on).
# A span may stand between the level and the target (a user's RUST_LOG=info enables codex's).
_HTTP_LINE = re.compile(
    rb"^\S*\s*DEBUG\s(?:[^\n]*?\s)?codex_http_client::client: Request (?:completed|failed) "
    rb"method=(\S+) url=(\S+)"
)
_ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")
HTTP_TARGET = b"codex_http_client::client"
_IMAGES_URL = re.compile(rb"/images/(?:generations|edits)(?:\?|$)")


def rust_log(user: str | None) -> str:
    """``RUST_LOG`` for codex: the user's directives (codex's default, errors, without them) and
    :data:`HTTP_LOG`."""
    return (
        f"{user.strip().rstrip(',')},{HTTP_LOG}" if user and user.strip() else f"error,{HTTP_LOG}"
    )


def http_log_line(line: bytes) -> bool | None:
    """None when ``line`` is not codex's HTTP request line; else whether it is a POST to the
    images endpoint (an image paid for, or tried)."""
    found = _HTTP_LINE.match(_ANSI.sub(b"", line))
    if found is None:
        return None
    return found.group(1) == b"POST" and _IMAGES_URL.search(found.group(2)) is not None


def resend_warnings(image_requests: int) -> tuple[str, ...]:
    """What to tell when codex sent the images request more than once (it resends on a server
    error, a timeout or a dropped connection): the backend may have counted each."""
    if image_requests <= 1:
        return ()
    return (
        f"codex sent the image request {image_requests} times (it resends after a server error "
        "or a dropped connection); the subscription may have counted more than one image.",
    )


def router_failure(stderr: str) -> str | None:
    """The last refusal of the images endpoint that codex itself reported on ``stderr``."""
    found = _ROUTER.findall(stderr)
    return found[-1].strip()[:2000] if found else None


def parse_endpoint_failure(text: str) -> EndpointFailure:
    """The status and the backend's error from one failure line (what cannot be read is None)."""
    text = text[:2000]
    match = _LINE.search(text)
    if match is None:
        return EndpointFailure(text=text)
    body = _unescape(match["body"][1:-1]) if match["body"] else None
    fields = _error_fields(body)
    message = fields.get("message")
    if not isinstance(message, str) or not message.strip():
        message = body.strip() if body and body.strip() else None
    return EndpointFailure(
        text=text,
        status=int(match["status"]),
        body=body,
        code=_word(fields.get("code")),
        type=_word(fields.get("type")),
        message=message,
        resets_at=_number(fields.get("resets_at")),
        resets_in_s=_number(fields.get("resets_in_seconds")),
    )


def _unescape(debug: str) -> str:
    """A Rust ``Debug`` string's contents, unescaped (``\\"``, ``\\n``, ``\\u{1f98a}`` ...)."""

    def one(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape.startswith("u{"):
            try:
                return chr(int(escape[2:-1], 16))
            except ValueError:
                return escape
        return _ESCAPES.get(escape, escape)

    return _ESCAPE.sub(one, debug)


def _error_fields(body: str | None) -> dict[str, Any]:
    """``error`` of an OpenAI-style JSON body (or the body's own top level, or nothing)."""
    if not body or not body.lstrip().startswith("{"):
        return {}
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    error = document.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error, **{k: v for k, v in document.items() if k != "error"}}
    detail = document.get("detail")
    return {"message": detail, **document} if isinstance(detail, str) else document


def _word(value: object) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value >= 0 else None
