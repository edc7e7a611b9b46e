"""The OpenAI Images API, as ``codex-image serve`` speaks it: parameters in, replies and errors out.

Pure values and functions (no server, no I/O), in the shapes of openai-python's
``image_generate_params``, ``image_edit_params``, ``images_response`` and
``image_gen_stream_event``. Clients add fields of their own, so unknown fields are ignored;
known fields with a wrong value are refused naming the field (``param``), as OpenAI does.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import CodexImageError, InputError, retry_rule
from ..limits import UNKNOWN_RESET_S
from ..request import parse_size
from ..results import ImageResult
from ..usage import UsageLimits

__all__ = [
    "MODEL_ID",
    "ImagesCall",
    "ParamError",
    "error_body",
    "error_reply",
    "images_reply",
    "parse_call",
    "render_json",
    "stream_event_pieces",
]

MODEL_ID = "gpt-image-2"
"""What the Codex CLI's image tool runs; any model id a client sends is accepted."""
MAX_N = 10
OutputFormat = Literal["png", "jpeg", "webp"]
ResponseFormat = Literal["b64_json", "url"]
_FORMATS: dict[str, OutputFormat] = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
_SIZE = re.compile(r"\d{2,5}x\d{2,5}")


class ParamError(InputError):
    """A parameter of the request is wrong: ``param`` names it (OpenAI's error field)."""

    def __init__(self, param: str, message: str, hint: str) -> None:
        super().__init__(message, reason=f"invalid_{param}", hint=hint)
        self.param = param


@dataclass(frozen=True, slots=True)
class ImagesCall:
    """One request of ``/v1/images/generations`` or ``/v1/images/edits``, checked."""

    prompt: str
    n: int = 1
    size: str | None = None
    """``WxH`` asked of the model, or None for ``auto``."""
    transparent: bool = False
    output_format: OutputFormat = "png"
    output_compression: int | None = None
    response_format: ResponseFormat = "b64_json"
    stream: bool = False
    edit: bool = False

    @property
    def event_prefix(self) -> str:
        return "image_edit" if self.edit else "image_generation"


def parse_call(fields: Mapping[str, Any], *, edit: bool = False) -> ImagesCall:
    """The call that ``fields`` (a JSON body, or a form's text fields) asks for.

    Form fields arrive as text, so numbers and booleans are read from text too. Raises
    :class:`ParamError` naming the first wrong field.
    """
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ParamError(
            "prompt", "prompt is missing or empty.", "Send a prompt: a text describing the image."
        )
    n = _integer(fields, "n", 1, 1, MAX_N)
    size = _size(fields.get("size"))
    background = _choice(fields, "background", ("auto", "transparent", "opaque"), "auto")
    raw_format = fields.get("output_format", "png")
    if raw_format is None:
        raw_format = "png"
    if not isinstance(raw_format, str) or raw_format.lower() not in _FORMATS:
        raise ParamError(
            "output_format",
            f"output_format {str(raw_format)[:20]!r} is not known.",
            "Send png, jpeg or webp.",
        )
    output_format = _FORMATS[raw_format.lower()]
    compression = None
    if fields.get("output_compression") is not None:
        compression = _integer(fields, "output_compression", 100, 0, 100)
    if background == "transparent" and output_format == "jpeg":  # as OpenAI refuses it
        raise ParamError(
            "background",
            "background transparent cannot be sent as jpeg: jpeg has no alpha channel.",
            "Ask for output_format png or webp, or leave background out.",
        )
    # OpenAI's default: a URL for the DALL-E models (LangChain's wrapper reads only `url`),
    # base64 for the GPT image models.
    model = fields.get("model")
    default_format = "url" if model in ("dall-e-2", "dall-e-3") else "b64_json"
    response_format = _choice(fields, "response_format", ("b64_json", "url"), default_format)
    if fields.get("mask") is not None:
        raise ParamError(
            "mask",
            "mask is not supported: the Codex CLI's image tool takes none.",
            "Leave mask out, and say in the prompt which part to change.",
        )
    return ImagesCall(
        prompt=prompt,
        n=n,
        size=size,
        transparent=background == "transparent",
        output_format=output_format,
        output_compression=compression,
        response_format="url" if response_format == "url" else "b64_json",
        stream=_flag(fields, "stream"),
        edit=edit,
    )


def _integer(fields: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = fields.get(name, default)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParamError(
            name,
            f"{name} must be a whole number from {low} to {high}.",
            f"Send {name} between {low} and {high}.",
        )
    return value


def _choice(fields: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = fields.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str) or value not in allowed:
        raise ParamError(
            name,
            f"{name} {str(value)[:20]!r} is not one of {', '.join(allowed)}.",
            f"Send {name} as one of {', '.join(allowed)}, or leave it out.",
        )
    return value


def _flag(fields: Mapping[str, Any], name: str) -> bool:
    value = fields.get(name, False)
    if value is None:
        return False
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise ParamError(name, f"{name} must be true or false.", f"Send {name} as true or false.")
    return value


def _size(value: object) -> str | None:
    if value is None or value == "auto":
        return None
    if not isinstance(value, str) or not _SIZE.fullmatch(value.strip()):
        raise ParamError(
            "size",
            f"size {str(value)[:20]!r} is not auto or WIDTHxHEIGHT.",
            "Send auto, or a size such as 1024x1024, 1536x1024 or 1024x1536.",
        )
    try:
        parse_size(value.strip())
    except InputError as error:
        raise ParamError("size", error.message, error.hint) from None
    return value.strip()


# --- replies ---------------------------------------------------------------------------------


def image_entry(result: ImageResult, *, b64_json: str | None, url: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"b64_json": b64_json} if url is None else {"url": url}
    entry["revised_prompt"] = result.revised_prompt
    return entry


def images_reply(
    call: ImagesCall,
    made: list[tuple[ImageResult, dict[str, Any]]],
    failed: list[CodexImageError],
    *,
    created: int,
) -> dict[str, Any]:
    """The ``ImagesResponse`` of ``made`` (each with its ``data`` entry); ``failed`` counts the
    images of this call that could not be made (an extension: OpenAI never fails part of n)."""
    first = made[0][0]
    reply: dict[str, Any] = {
        "created": created,
        "data": [entry for _, entry in made],
        "size": f"{first.width}x{first.height}",
        # No "quality": the subscription's backend picks it and says nothing of it, and "auto"
        # is not a quality a response may report (openai's ImagesResponse refuses it).
        "background": "transparent" if any(r.has_alpha for r, _ in made) else "opaque",
        "output_format": call.output_format,
        "usage": usage(*(result for result, _ in made)),
    }
    if failed:
        reply["failed"] = len(failed)
        reply["errors"] = [error_body(error)["error"] for error in failed]
    return reply


def usage(*results: ImageResult) -> dict[str, Any]:
    """OpenAI's usage block from what codex reported of its turns, summed over ``results``
    (zeros when it reported none: the subscription meters images by its own limits)."""
    text_in = sum(int((result.usage or {}).get("input_tokens", 0)) for result in results)
    out = sum(int((result.usage or {}).get("output_tokens", 0)) for result in results)
    return {
        "input_tokens": text_in,
        "input_tokens_details": {"text_tokens": text_in, "image_tokens": 0},
        "output_tokens": out,
        "total_tokens": text_in + out,
    }


PIECE_CHARS = 1 << 20
"""Base64 is passed on in pieces of this many characters: no single step of rendering holds the
interpreter (and so the event loop answering other requests) for long."""


def usage_headers(limits: UsageLimits | None) -> dict[str, str]:
    """The subscription's usage windows as headers of our own on an image reply, named as the
    backend names its own (``x-codex-primary-used-percent``, ``-window-minutes``,
    ``-reset-at`` in Unix seconds; ``secondary`` likewise) and ``x-codex-plan-type``; none
    when codex recorded none."""
    if limits is None:
        return {}
    headers = {}
    for name, window in (("primary", limits.primary), ("secondary", limits.secondary)):
        if window is None:
            continue
        headers[f"x-codex-{name}-used-percent"] = f"{window.used_percent:g}"
        if window.window_minutes is not None:
            headers[f"x-codex-{name}-window-minutes"] = str(window.window_minutes)
        if window.resets_at is not None:
            headers[f"x-codex-{name}-reset-at"] = str(int(window.resets_at))
    if limits.plan is not None:
        headers["x-codex-plan-type"] = limits.plan
    return headers


def render_json(document: dict[str, Any], *, prefix: str = "", suffix: str = "") -> list[bytes]:
    """``document`` as JSON bytes in pieces (with ``prefix`` and ``suffix`` around it). The
    ``b64_json`` strings, up to tens of MB each, are not handed to ``json.dumps`` (which would
    hold the interpreter for all of them at once): base64 needs no escaping, so each is put in
    between the pieces of the rest, in slices of :data:`PIECE_CHARS`."""
    marker = f"@b64-{secrets.token_hex(8)}-"
    images: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, inner in value.items():
                if key == "b64_json" and isinstance(inner, str) and len(inner) > PIECE_CHARS:
                    out[key] = f"{marker}{len(images)}"
                    images.append(inner)
                else:
                    out[key] = swap(inner)
            return out
        if isinstance(value, list):
            return [swap(inner) for inner in value]
        return value

    text = prefix + json.dumps(swap(document), ensure_ascii=False, separators=(",", ":")) + suffix
    pieces: list[bytes] = []
    for n, image in enumerate(images):
        before, text = text.split(f"{marker}{n}", 1)
        pieces.append(before.encode("utf-8"))
        pieces += [image[i : i + PIECE_CHARS].encode("ascii")
                   for i in range(0, len(image), PIECE_CHARS)]  # fmt: skip
    pieces.append(text.encode("utf-8"))
    return pieces


def stream_event_pieces(
    call: ImagesCall, result: ImageResult, b64_json: str, created: int
) -> list[bytes]:
    """The ``image_generation.completed`` (or ``image_edit.completed``) event as SSE text, in
    pieces (see :func:`render_json`)."""
    kind = f"{call.event_prefix}.completed"
    data = {
        "type": kind,
        "b64_json": b64_json,
        "created_at": created,
        "size": f"{result.width}x{result.height}",
        "quality": "auto",
        "background": "transparent" if result.has_alpha else "opaque",
        "output_format": call.output_format,
        "usage": usage(result),
    }
    return render_json(data, prefix=f"event: {kind}\ndata: ", suffix="\n\n")


def stream_error(error: CodexImageError) -> str:
    return f"event: error\ndata: {json.dumps({'type': 'error', **error_body(error)})}\n\n"


# --- errors ----------------------------------------------------------------------------------

_STATUS = {"input": 400, "auth": 403, "quota": 429, "transient": 502, "launch": 503}
_TYPE = {
    "input": "invalid_request_error",
    "auth": "permission_error",
    "quota": "insufficient_quota",
    "transient": "server_error",
    "launch": "server_error",
}
# The library's input errors that are about one field of the request.
_PARAMS = {"empty_prompt": "prompt", "prompt_too_long": "prompt", "invalid_prompt": "prompt",
           "invalid_size": "size"}  # fmt: skip


# An absolute path on the server (POSIX, or Windows with a drive letter), as messages quote them.
_SERVER_PATH = re.compile(
    r"(?<![\w:/.])(?:/(?:[^\s/'\"()]+/)*[^\s/'\"(),]+|[A-Za-z]:\\[^\s'\"()]+)"
)


def error_body(error: CodexImageError) -> dict[str, Any]:
    """OpenAI's error object: the message and the hint together (the SDKs show the message
    only), with our kind, reason, hint and reset time beside them. Paths on the server (a file
    codex left, a folder) are no business of a remote client: they are left out."""
    return _error_object(
        _without_paths(error.message),
        _without_paths(error.hint),
        error_type="rate_limit_error" if error.reason == "rate_limited" else _TYPE[error.kind],
        param=error.param if isinstance(error, ParamError) else _PARAMS.get(error.reason),
        code=error.reason,
        kind=error.kind,
        retry_at=error.retry_at,
    )


def _without_paths(text: str) -> str:
    return _SERVER_PATH.sub("(a path on the server)", text)


def _error_object(
    message: str,
    hint: str,
    *,
    error_type: str,
    param: str | None,
    code: str,
    kind: str,
    retry_at: str | None,
) -> dict[str, Any]:
    """OpenAI's error shape, with our kind, hint and reset time beside its fields."""
    return {
        "error": {
            "message": f"{message} {hint}",
            "type": error_type,
            "param": param,
            "code": code,
            "kind": kind,
            "hint": hint,
            "retry_at": retry_at,
        }
    }


def error_reply(error: CodexImageError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers for ``error``, mapped so that the official SDKs raise the
    matching class (400 BadRequest, 403 PermissionDenied, 429 RateLimit, 5xx InternalServer)
    and do not retry what a retry cannot fix."""
    status = _STATUS[error.kind]
    if error.kind == "transient" and error.reason == "timeout":
        status = 504
    elif error.kind == "transient" and error.reason == "cancelled":  # the server is stopping
        status = 503
    headers: dict[str, str] = {}
    rule = retry_rule(error)
    if rule.after_s is not None:
        headers["retry-after"] = str(max(1, math.ceil(rule.after_s)))
    elif error.kind == "quota":  # codex named no time: the SDKs still need one to wait
        headers["retry-after"] = str(int(UNKNOWN_RESET_S))
    # The SDKs retry 408/409/429/5xx twice unless told not to: our own attempts are spent, and
    # a failure that may have paid for an image is never run again.
    headers["x-should-retry"] = "true" if rule.caller else "false"
    return status, error_body(error), headers


def refusal(status: int, message: str, code: str, hint: str) -> dict[str, Any]:
    """An error of the server itself (token, Host, Origin, size, queue) in OpenAI's shape."""
    kind = "rate_limit_error" if status == 429 else "invalid_request_error"
    return _error_object(
        message, hint, error_type=kind, param=None, code=code, kind="input", retry_at=None
    )
