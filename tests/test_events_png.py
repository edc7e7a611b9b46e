"""The pure decoders: JSONL events and PNG structure."""

from __future__ import annotations

import json
import random
import zlib

import pytest

from codex_cli_image.events import (
    AgentMessage,
    ErrorNotice,
    EventDecoder,
    LineDecoder,
    OtherEvent,
    ThreadStarted,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    decode_event,
)
from codex_cli_image.png import PngError, inspect_png
from codex_cli_image.testing import make_png

from helpers import FIXTURES

TRANSCRIPT = (FIXTURES / "transcripts" / "success-0.169.jsonl").read_bytes()


def test_transcript_decodes_to_typed_events() -> None:
    decoder = EventDecoder()
    events = decoder.feed(TRANSCRIPT) + decoder.flush()
    assert events[:3] == [
        ThreadStarted("019a7c3e-5f1d-7b2a-9c4e-0123456789ab"),
        TurnStarted(),
        AgentMessage("Done."),
    ]
    assert isinstance(events[3], TurnCompleted) and events[3].usage["output_tokens"] == 122
    assert decoder.malformed == 0


@pytest.mark.parametrize("seed", range(5))
def test_any_chunking_gives_the_same_events(seed: int) -> None:
    text = json.dumps(
        {"type": "item.completed", "item": {"type": "agent_message", "text": "héllo ✓ 猫"}}
    )
    data = TRANSCRIPT + text.encode() + b"\n"
    whole = EventDecoder().feed(data)
    rng = random.Random(seed)
    decoder = EventDecoder()
    events, pos = [], 0
    while pos < len(data):  # cuts land inside multi-byte characters too
        step = rng.randint(1, 7)
        events += decoder.feed(data[pos : pos + step])
        pos += step
    assert events + decoder.flush() == whole
    assert whole[-1] == AgentMessage("héllo ✓ 猫")


def test_failures_and_notices() -> None:
    decoder = EventDecoder()
    data = (FIXTURES / "transcripts" / "reconnecting-then-failed.jsonl").read_bytes()
    events = decoder.feed(data)
    notices = [e for e in events if isinstance(e, ErrorNotice)]
    assert len(notices) == 5 and all(n.reconnecting for n in notices)
    assert events[-1] == TurnFailed("stream disconnected before completion")
    assert not ErrorNotice("Quota exceeded.").reconnecting


def test_malformed_and_unknown_lines_are_skipped() -> None:
    decoder = EventDecoder()
    events = decoder.feed(
        b'not json\n[1]\n{"no": "type"}\n\xff\xfe\n\n'
        b'{"type": "future.thing"}\n'
        b'{"type": "item.completed", "item": {"type": "reasoning", "text": "hm"}}\n'
        b'{"type": "turn.failed"}\n'
    )
    assert decoder.malformed == 4
    assert [type(e) for e in events] == [OtherEvent, OtherEvent, TurnFailed]
    assert events[-1] == TurnFailed("")


def test_oversized_line_is_dropped_with_bounded_memory() -> None:
    decoder = EventDecoder(max_line=1024)
    events = decoder.feed(b'{"type": "turn.started"}\n' + b"x" * 5000)
    events += decoder.feed(b"y" * 5000 + b'\n{"type": "turn.started"}\n')
    assert events == [TurnStarted(), TurnStarted()] and decoder.oversized == 1
    lines = LineDecoder(max_line=10)
    assert lines.feed(b"0123456789\n01234567890\nok") == [b"0123456789"]
    assert lines.flush() == [b"ok"] and lines.oversized == 1


def test_last_line_without_newline() -> None:
    decoder = EventDecoder()
    assert decoder.feed(b'{"type": "turn.started"}') == []
    assert decoder.flush() == [TurnStarted()]


# --- PNG ---


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("bad-crc.png", "CRC"),
        ("truncated.png", "truncated"),
        ("no-iend.png", "truncated"),
        ("jpeg-bytes.png", "JPEG"),
        ("empty.png", "empty"),
    ],
)
def test_broken_pngs_say_what_is_wrong(name: str, problem: str) -> None:
    with pytest.raises(PngError, match=problem):
        inspect_png((FIXTURES / "png" / name).read_bytes())


def test_valid_png_reports_geometry_and_alpha() -> None:
    info = inspect_png((FIXTURES / "png" / "valid-64x48.png").read_bytes())
    assert (info.width, info.height, info.has_alpha) == (64, 48, False)
    rgba = inspect_png((FIXTURES / "png" / "valid-rgba-32x32.png").read_bytes())
    assert (rgba.width, rgba.height, rgba.has_alpha, rgba.color_type) == (32, 32, True, 6)


def test_trns_chunk_counts_as_alpha() -> None:
    png = make_png(2, 2, "x")
    iend = png.rindex(b"IEND") - 4
    trns = (3).to_bytes(4, "big") + b"tRNS" + b"\x00\x00\x00"
    trns += zlib.crc32(b"tRNS\x00\x00\x00").to_bytes(4, "big")
    assert inspect_png(png[:iend] + trns + png[iend:]).has_alpha


def test_size_cap_and_other_formats() -> None:
    png = make_png(8, 8, "x")
    with pytest.raises(PngError, match="more than"):
        inspect_png(png, max_bytes=len(png) - 1)
    with pytest.raises(PngError, match="GIF"):
        inspect_png(b"GIF89a" + b"\x00" * 20)
    with pytest.raises(PngError, match="first chunk"):
        inspect_png(b"\x89PNG\r\n\x1a\n" + png[8 + 25 :])


def test_absurd_nesting_is_just_malformed() -> None:
    """Regression guard: 200,000 '[' raised RecursionError out of the runner's task group."""
    decoder = EventDecoder()
    assert decoder.feed(b"[" * 200_000 + b"\n" + b'{"type": "turn.started"}\n') == [TurnStarted()]
    assert decoder.malformed == 1


@pytest.mark.parametrize("thread_id", ["../../etc", "a/b", "", ".hidden", "x" * 200, "a\\b"])
def test_a_thread_id_that_could_leave_its_folder_is_ignored(thread_id: str) -> None:
    line = json.dumps({"type": "thread.started", "thread_id": thread_id})
    assert decode_event(line.encode()) is None
