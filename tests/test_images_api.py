"""The OpenAI Images API's parameters, replies and errors (pure: no server)."""

from __future__ import annotations

from typing import Any

import pytest

from codex_cli_image.errors import AuthError, InputError, LaunchError, QuotaError, TransientError
from codex_cli_image.limits import block_s
from codex_cli_image.serve.images_api import (
    ImagesCall,
    ParamError,
    error_reply,
    parse_call,
)


def test_defaults_and_lenient_fields() -> None:
    call = parse_call(
        {
            "prompt": "a fox",
            "model": "dall-e-3",
            "quality": "hd",
            "user": "u",
            "moderation": "low",
            "partial_images": 2,
            "style": "vivid",
        }
    )
    assert call == ImagesCall("a fox", response_format="url")  # dall-e-3's default, as OpenAI


def test_form_fields_arrive_as_text() -> None:
    call = parse_call(
        {
            "prompt": "a fox",
            "n": "2",
            "stream": "true",
            "size": "1024x1536",
            "background": "transparent",
            "output_format": "webp",
            "output_compression": "80",
            "response_format": "url",
        },
        edit=True,
    )
    assert call == ImagesCall(
        "a fox",
        n=2,
        size="1024x1536",
        transparent=True,
        output_format="webp",
        output_compression=80,
        response_format="url",
        stream=True,
        edit=True,
    )
    assert call.event_prefix == "image_edit"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "prompt"),
        ({"prompt": "  "}, "prompt"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "n": True}, "n"),
        ({"prompt": "x", "n": 1.5}, "n"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "size": "1x1"}, "size"),
        ({"prompt": "x", "background": "green"}, "background"),
        ({"prompt": "x", "output_format": "gif"}, "output_format"),
        ({"prompt": "x", "output_compression": 101}, "output_compression"),
        ({"prompt": "x", "response_format": "binary"}, "response_format"),
        ({"prompt": "x", "stream": "maybe"}, "stream"),
        ({"prompt": "x", "mask": "m.png"}, "mask"),
        # #30 item 8: OpenAI refuses it; we flattened the image and still called it transparent
        ({"prompt": "x", "background": "transparent", "output_format": "jpeg"}, "background"),
    ],
)
def test_a_wrong_field_is_named(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_call(fields)
    assert caught.value.param == param and isinstance(caught.value, InputError)
    assert caught.value.hint


def test_errors_map_to_the_statuses_the_sdks_know() -> None:
    cases = [
        (InputError("m.", reason="invalid_prompt", hint="h."), 400, "false"),
        (AuthError("m.", reason="not_signed_in", hint="Run codex login."), 403, "false"),
        (LaunchError("m.", reason="codex_not_found", hint="h."), 503, "false"),
        # #30: our own attempts are spent (codex_failed), or an image may have been paid for
        # (the rest): a client that retried multiplied the codex runs.
        (TransientError("m.", reason="codex_failed", hint="h."), 502, "false"),
        (TransientError("m.", reason="invalid_image", hint="h."), 502, "false"),
        (TransientError("m.", reason="image_too_large", hint="h."), 502, "false"),
        (TransientError("m.", reason="internal_error", hint="h."), 502, "false"),
        (TransientError("m.", reason="network_blocked", hint="h."), 502, "false"),
        (TransientError("m.", reason="timeout", hint="h."), 504, "false"),
        (TransientError("m.", reason="cancelled", hint="h."), 503, "true"),
        (QuotaError("m.", reason="rate_limited", hint="h.", retry_after_s=12), 429, "true"),
    ]
    for error, status, retry in cases:
        got, body, headers = error_reply(error)
        assert got == status, error
        assert headers.get("x-should-retry") == retry, error
        assert body["error"]["message"] == f"m. {error.hint}"
        assert body["error"]["code"] == error.reason and body["error"]["kind"] == error.kind


def test_a_usage_limit_is_not_retried_and_blocks_until_it_resets() -> None:
    limit = QuotaError(
        "Limit.",
        reason="usage_limit",
        hint="Wait.",
        retry_after_s=3599.2,
        retry_at="2026-12-06T23:00:00+00:00",
    )
    status, body, headers = error_reply(limit)
    assert status == 429 and headers == {"retry-after": "3600", "x-should-retry": "false"}
    assert body["error"]["retry_at"] == "2026-12-06T23:00:00+00:00"
    assert body["error"]["type"] == "insufficient_quota"
    assert block_s(limit) == 3599.2
    unknown = QuotaError("Limit.", reason="usage_limit", hint="Wait.")
    assert block_s(unknown) == 60.0


def test_a_rate_limit_may_be_retried_and_blocks_nothing() -> None:
    rate = QuotaError("Slow.", reason="rate_limited", hint="Wait.", retry_after_s=5)
    status, body, headers = error_reply(rate)
    assert status == 429 and headers == {"retry-after": "5", "x-should-retry": "true"}
    assert body["error"]["type"] == "rate_limit_error"
    assert block_s(rate) is None


def test_replies_validate_with_the_sdks_own_types() -> None:
    """#30 item 8: "quality": "auto" failed openai's ImagesResponse validation."""
    import json
    from pathlib import Path

    from openai.types import ImageGenCompletedEvent, ImagesResponse

    from codex_cli_image.results import ImageResult
    from codex_cli_image.serve.images_api import image_entry, images_reply, stream_event_pieces

    result = ImageResult(
        path=Path("/x.png"), bytes=10, sha256="0" * 64, width=96, height=64, format="png",
        thread_id="t", codex_version="0.171.0", elapsed_s=1.0, usage={"input_tokens": 5,
        "output_tokens": 2}, revised_prompt="a fox", attempts=1, warnings=(),
        image_source="file", has_alpha=True,
    )  # fmt: skip
    for call in (ImagesCall("a fox"), ImagesCall("a fox", output_format="webp")):
        entry = image_entry(result, b64_json="AAAA", url=None)
        reply = images_reply(call, [(result, entry)], [], created=1)
        parsed = ImagesResponse.model_validate(reply)
        assert parsed.size == "96x64" and parsed.background == "transparent"
        pieces = stream_event_pieces(ImagesCall("a fox", stream=True), result, "AAAA", 1)
        event = b"".join(pieces).decode()
        data = json.loads(event.split("data: ", 1)[1])
        assert ImageGenCompletedEvent.model_validate(data).type == "image_generation.completed"


def test_render_json_passes_long_base64_in_pieces() -> None:
    """#30 item 9: the reply is rendered without one json.dumps over all the images (which held
    the interpreter, and so the event loop, for a second); joined, it is the same JSON."""
    import json

    from codex_cli_image.serve.images_api import PIECE_CHARS, render_json

    big = "QUJD" * (PIECE_CHARS // 2 + 7)
    document = {"data": [{"b64_json": big, "revised_prompt": 'a "fox" @b64-0'}, {"b64_json": "x"}]}
    pieces = render_json(document, prefix="data: ", suffix="\n\n")
    joined = b"".join(pieces).decode()
    assert joined.startswith("data: ") and json.loads(joined[6:-2]) == document
    assert max(len(piece) for piece in pieces) <= PIECE_CHARS + 200


def test_the_dall_e_models_default_to_url_as_at_openai() -> None:
    """#31: LangChain's DallEAPIWrapper reads `url`; OpenAI answers a URL by default for the
    DALL-E models, base64 for the GPT image models."""
    assert parse_call({"prompt": "x", "model": "dall-e-3"}).response_format == "url"
    assert parse_call({"prompt": "x", "model": "dall-e-2"}).response_format == "url"
    assert parse_call({"prompt": "x", "model": "gpt-image-1"}).response_format == "b64_json"
    assert parse_call({"prompt": "x"}).response_format == "b64_json"
    asked = {"prompt": "x", "model": "dall-e-3", "response_format": "b64_json"}
    assert parse_call(asked).response_format == "b64_json"
