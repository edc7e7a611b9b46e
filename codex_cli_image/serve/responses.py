"""The answers the gate and the routes give of their own: errors in OpenAI's shape."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse, Response

from ..errors import CodexImageError
from ..request import MAX_REFERENCE_BYTES, MAX_REFERENCES
from .images_api import error_reply, refusal
from .options import MAX_EDIT_BYTES, MAX_JSON_BYTES, QUEUE_RETRY_AFTER_S


def error_response(error: CodexImageError) -> Response:
    status, body, headers = error_reply(error)
    return JSONResponse(body, status_code=status, headers=headers)


def refused_response(
    status: int, message: str, code: str, hint: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(
        refusal(status, message, code, hint), status_code=status, headers=dict(headers or {})
    )


def too_large(path: str, cors: Mapping[str, str] | None = None) -> Response:
    limit = MAX_EDIT_BYTES if path == "/v1/images/edits" else MAX_JSON_BYTES
    return refused_response(
        413,
        f"The request body is over {limit // (1024 * 1024)} MiB.",
        "body_too_large",
        f"Send at most {MAX_REFERENCES} images of at most "
        f"{MAX_REFERENCE_BYTES // (1024 * 1024)} MB each, and a JSON body under 1 MiB.",
        headers={**(cors or {}), "connection": "close"},  # an allowed page may read it
    )


class QueueFull(Exception):
    def __init__(self, pending: int, max_queue: int) -> None:
        super().__init__(f"{pending} images are being made or waiting (--max-queue {max_queue}).")


def queue_full_response(full: QueueFull) -> Response:
    return refused_response(
        429,
        str(full),
        "queue_full",
        "Wait and retry, or start the server with a larger --max-queue.",
        headers={"retry-after": str(QUEUE_RETRY_AFTER_S)},
    )
