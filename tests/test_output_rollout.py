"""Output planning and delivery; the rollout reader."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import tracemalloc
from pathlib import Path

import pytest

from codex_cli_image import InputError
from codex_cli_image.output import Target, plan_output, slug, write_atomically
from codex_cli_image.rollout import (
    STRING_LIMIT,
    RecordReader,
    find_rollout,
    parse_image_records,
    read_image_records,
    read_rollout,
)
from codex_cli_image.testing import make_png

from helpers import FIXTURES

NOW = dt.datetime(2026, 11, 21, 9, 30, 5)
PNG = make_png(4, 4, "x")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("A red fox, in the snow!", "a-red-fox-in-the-snow"),
        ("Café crème ☕", "cafe-creme"),
        ("日本語だけ", "image"),
        ("word " * 30, "word-word-word-word-word-word-word-word"),
    ],
)
def test_slug(prompt: str, expected: str) -> None:
    assert slug(prompt) == expected


def test_directory_output_gets_a_unique_name(tmp_path: Path) -> None:
    target = plan_output(tmp_path, "A red fox", now=NOW)
    assert target.path == tmp_path / "a-red-fox-20261121-093005.png" and not target.overwrite


def test_default_output_is_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert plan_output(None, "fox", now=NOW).path == tmp_path / "fox-20261121-093005.png"


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("missing-parent", "output_dir_missing"),
        ("missing-dir-slash", "output_dir_missing"),
        ("exists", "output_exists"),
        ("symlink", "output_is_symlink"),
        ("jpg", "output_not_png"),
        ("readonly-dir", "output_not_writable"),
        ("exists-dir-entry", "output_not_a_file"),
    ],
)
def test_bad_outputs_are_input_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: str, reason: str
) -> None:
    overwrite = False
    if setup == "missing-parent":
        output: str | Path = tmp_path / "nope" / "a.png"
    elif setup == "missing-dir-slash":
        output = f"{tmp_path}/nope/"
    elif setup == "exists":
        output = tmp_path / "a.png"
        output.write_bytes(b"mine")
    elif setup == "symlink":
        (tmp_path / "real.png").write_bytes(b"mine")
        output = tmp_path / "link.png"
        output.symlink_to(tmp_path / "real.png")
    elif setup == "jpg":
        output = tmp_path / "a.jpg"
    elif setup == "readonly-dir":
        output = tmp_path / "a.png"
        monkeypatch.setattr(os, "access", lambda *a, **k: False)  # root writes anywhere
    else:
        output = tmp_path / "fifo.png"
        os.mkfifo(output)
        overwrite = True
    with pytest.raises(InputError) as info:
        plan_output(output, "fox", overwrite=overwrite, now=NOW)
    assert info.value.reason == reason and info.value.hint
    if setup in ("exists", "symlink"):
        assert (tmp_path / ("a.png" if setup == "exists" else "real.png")).read_bytes() == b"mine"


def test_overwrite_allows_replacing_a_file(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"old")
    target = plan_output(tmp_path / "a.png", "fox", overwrite=True)
    path, warnings = write_atomically(PNG, target)
    assert path.read_bytes() == PNG and warnings == []


def test_deliver_writes_atomically_and_leaves_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    path, warnings = write_atomically(PNG, Target(out / "a.png", overwrite=False))
    assert path == out / "a.png" and path.read_bytes() == PNG and warnings == []
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]


def test_destination_that_appears_meanwhile_is_never_overwritten(tmp_path: Path) -> None:
    """Regression guard for the race: the name was free when checked, taken at delivery."""
    target = plan_output(tmp_path / "a.png", "fox")
    (tmp_path / "a.png").write_bytes(b"someone else's")
    (tmp_path / "a-1.png").write_bytes(b"and another")
    path, warnings = write_atomically(PNG, target)
    assert path == tmp_path / "a-2.png" and path.read_bytes() == PNG
    assert (tmp_path / "a.png").read_bytes() == b"someone else's"
    assert warnings and "a-2.png" in warnings[0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_deliver_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a.png").write_bytes(b"taken")
    path, _ = write_atomically(PNG, Target(tmp_path / "a.png", overwrite=False))
    assert path.name == "a-1.png" and path.read_bytes() == PNG
    assert (tmp_path / "a.png").read_bytes() == b"taken"


def test_failed_delivery_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError):
        write_atomically(PNG, Target(out / "a.png", overwrite=False))
    assert list(out.iterdir()) == []


# --- rollout ---


def test_records_of_every_shape() -> None:
    new = read_image_records(FIXTURES / "transcripts" / "rollout-0.169-extension.jsonl")
    assert [(r.status, r.revised_prompt) for r in new] == [("completed", "a red fox")]
    assert new[0].saved_path and new[0].saved_path.endswith(".png")
    old = read_image_records(FIXTURES / "transcripts" / "rollout-0.142-legacy.jsonl")
    assert len(old) == 1  # the event and the response item of one call are merged
    assert old[0].id == "ig_0a1b2c" and old[0].saved_path and old[0].revised_prompt == "a red fox"
    # The recorded base64 is shortened ("iVBORw0KGgo..."): reported, never taken for an image.
    assert old[0].image is None and old[0].invalid


def test_failure_and_noise() -> None:
    lines = [
        b"not json image_gen\n",
        json.dumps({"type": "event_msg", "payload": {"type": "item_completed", "item": {
            "type": "Extension", "kind": "image_gen.generation", "id": "exec-1", "status": "failed",
            "failure": {"message": "403 image_generation_not_supported"}}}}).encode(),
        json.dumps({"type": "event_msg", "payload": {"type": "agent_message"}}).encode(),
    ]  # fmt: skip
    (record,) = parse_image_records(lines)
    assert record.status == "failed" and "image_generation_not_supported" in (record.failure or "")


def _recorded_lines(name: str) -> list[bytes]:
    """The image lines of a real CLI recording, back as rollout lines."""
    records = json.loads((FIXTURES / name).read_text("utf-8"))["image_records"]
    return [json.dumps(r).encode() for r in records]


def _script_output(call_id: str, status: int) -> bytes:
    text = f"Script error:\nimage generation failed: http {status} X: None"
    return json.dumps({"type": "response_item", "payload": {
        "type": "custom_tool_call_output", "call_id": call_id,
        "output": [{"type": "input_text", "text": "Script failed"},
                   {"type": "input_text", "text": text}]}}).encode()  # fmt: skip


def _failed_extension(record_id: str) -> bytes:
    return json.dumps({"type": "event_msg", "payload": {"type": "item_completed", "item": {
        "type": "Extension", "kind": "image_gen.generation", "id": record_id,
        "status": "failed", "result": "", "failure": None}}}).encode()  # fmt: skip


@pytest.mark.parametrize("version", ["0.149.0", "0.169.0", "0.171.0"])
def test_code_mode_failure_is_explained_by_the_exec_output(version: str) -> None:
    """Regression guard: in code mode the reason is in the exec call's output, under the exec
    call's id (not the record's), and was never read."""
    (record,) = parse_image_records(_recorded_lines(f"codex-{version}/refused_code_mode.json"))
    assert record.status == "failed" and record.id.startswith("exec-")
    assert (record.failure or "").startswith("image generation failed: http 403 Forbidden")


def test_direct_failure_is_explained_by_its_function_output() -> None:
    (record,) = parse_image_records(_recorded_lines("codex-0.171.0/refused.json"))
    assert record.status == "failed" and "http 403" in (record.failure or "")


def test_script_failures_explain_records_in_order() -> None:
    lines = [_failed_extension("exec-a"), _script_output("call_1", 400),
             _failed_extension("exec-b"), _failed_extension("exec-c"),
             _script_output("call_2", 429), _script_output("call_3", 500)]  # fmt: skip
    records = {r.id: r for r in parse_image_records(lines)}
    assert "http 400" in (records["exec-a"].failure or "")
    assert "http 429" in (records["exec-b"].failure or "")
    assert "http 500" in (records["exec-c"].failure or "")


def test_a_failure_line_without_a_failed_image_record_is_the_models_own_words() -> None:
    """A script can print or throw codex's failure line (#29): only a failed image call that
    codex recorded makes it a failure of the images endpoint."""
    assert parse_image_records([_script_output("call_9", 403)]) == []
    # A failed record after it is not explained by it either (codex writes the record first).
    (record,) = parse_image_records([_script_output("call_9", 403), _failed_extension("exec-z")])
    assert record.status == "failed" and record.failure is None


def test_find_rollout(tmp_path: Path) -> None:
    day = tmp_path / "sessions" / "2026" / "11" / "20"
    day.mkdir(parents=True)
    target = day / "rollout-2026-11-20T23-59-59-tid-1.jsonl"
    target.write_text("")
    (day / "rollout-2026-11-20T23-59-59-tid-2.jsonl").write_text("")
    assert find_rollout(tmp_path, "tid-1", around=dt.datetime(2026, 11, 21, 0, 0, 1)) == target
    assert find_rollout(tmp_path, "tid-1", around=dt.datetime(2020, 1, 1)) == target
    assert find_rollout(tmp_path, "tid-3") is None


def test_find_rollout_takes_the_thread_id_literally(tmp_path: Path) -> None:
    """Regression guard: the id was part of a glob pattern, a new pattern to compile and cache
    for every run of a long-lived process (and an id with [ or * would not match itself)."""
    day = tmp_path / "sessions" / "2026" / "11" / "20"
    day.mkdir(parents=True)
    (day / "rollout-2026-11-20T10-00-00-tid-1.jsonl").write_text("")
    odd = day / "rollout-2026-11-20T10-00-00-tid-[1].jsonl"
    odd.write_text("")
    assert find_rollout(tmp_path, "tid-[1]", around=dt.datetime(2026, 11, 20)) == odd


def test_hosted_record_decodes_to_the_png(tmp_path: Path) -> None:
    line = json.dumps({"type": "response_item", "payload": {
        "type": "image_generation_call", "id": "ig_1", "status": "completed",
        "result": base64.b64encode(PNG).decode()}}).encode()  # fmt: skip
    (record,) = parse_image_records([line])
    assert record.image == PNG and record.invalid is None


def test_placeholder_is_removed_when_the_move_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression guard: without hard links a failed move left an empty file at the user's path."""
    out = tmp_path / "out"
    out.mkdir()

    def no_links(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_atomically(PNG, Target(out / "a.png", overwrite=False))
    assert list(out.iterdir()) == []


def _extension_line(image: bytes | str, *, call_id: str = "exec-1", prompt: str = "a fox") -> bytes:
    """A 0.169 image record as codex writes it (compact JSON, result before savedPath)."""
    result = image if isinstance(image, str) else base64.b64encode(image).decode()
    item = {"type": "Extension", "kind": "image_gen.generation", "id": call_id,
            "status": "completed", "revisedPrompt": prompt, "result": result, "failure": None,
            "savedPath": f"/home/me/.codex/generated_images/t/{call_id}.png"}  # fmt: skip
    entry = {"type": "event_msg", "payload": {"type": "item_completed", "item": item}}
    return json.dumps(entry, separators=(",", ":")).encode()


def _noise(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def _feed_in_pieces(data: bytes, seed: int, *, keep_image: bool = True) -> RecordReader:
    reader = RecordReader(keep_image=keep_image)
    chooser, pos = random.Random(seed), 0
    while pos < len(data):
        step = chooser.choice((1, 2, 3, 5, 64, 4093, 65536))
        reader.feed(data[pos : pos + step])
        pos += step
    return reader


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_image_line_in_pieces_of_any_size(seed: int) -> None:
    image = _noise(3 * STRING_LIMIT)  # its base64 is far beyond the string limit
    prompt = 'a "quoted" fox \\ with a backslash, and \u00e9'
    data = b"\n".join([
        json.dumps({"type": "session_meta", "payload": {"id": "t"}}).encode(),
        _extension_line(image, prompt=prompt),
        _extension_line(make_png(2, 2, "second"), call_id="exec-2"),
    ])  # fmt: skip
    first, second = _feed_in_pieces(data, seed).close()
    assert (first.id, first.image, first.revised_prompt) == ("exec-1", image, prompt)
    assert first.saved_path == "/home/me/.codex/generated_images/t/exec-1.png"
    assert second.image is None  # only the first image is decoded and kept
    skipped = _feed_in_pieces(data, seed, keep_image=False).close()
    assert [r.image for r in skipped] == [None, None]
    assert skipped[0].revised_prompt == prompt and skipped[0].invalid is None


def test_invalid_long_base64_is_reported_and_the_next_image_kept() -> None:
    broken = "A" * (2 * STRING_LIMIT) + "*" + "A" * 7
    good = _noise(2 * STRING_LIMIT)
    lines = [_extension_line(broken), _extension_line(good, call_id="exec-2")]
    first, second = parse_image_records(lines)
    assert first.image is None and first.invalid and "base64" in first.invalid
    assert second.image == good


def test_reading_the_revised_prompt_never_holds_the_image(tmp_path: Path) -> None:
    """Regression guard: after a file run the whole rollout, with the image's multi-MB base64
    line, was parsed just for the revised prompt; a 20 MB PNG cost ~80 MB more."""
    image = _noise(8 << 20)
    rollout = tmp_path / "rollout.jsonl"
    rollout.write_bytes(_extension_line(image) + b"\n")
    del image
    tracemalloc.start()
    try:
        (record,) = read_image_records(rollout, keep_image=False)
        _, skipping = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        (kept,) = read_image_records(rollout)
        _, keeping = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record.revised_prompt == "a fox" and record.image is None
    assert skipping < 2 << 20, f"{skipping} bytes at peak"
    assert kept.image is not None and len(kept.image) == 8 << 20
    assert keeping < (8 << 20) + (3 << 20), f"{keeping} bytes at peak"


def test_the_usage_windows_codex_recorded_are_read_with_the_records(tmp_path: Path) -> None:
    """codex-facts section 11: token_count events carry the windows; the latest one counts."""

    def counted(primary: float, secondary: float | None) -> bytes:
        limits = {"limit_id": "codex", "primary": {"used_percent": 100.0, "window_minutes": 300,
                  "resets_at": primary},
                  "secondary": None if secondary is None else {"used_percent": 40.0,
                  "window_minutes": 10080, "resets_at": secondary}}  # fmt: skip
        return json.dumps({"type": "event_msg", "payload": {"type": "token_count", "info": None,
                           "rate_limits": limits}}).encode()  # fmt: skip

    path = tmp_path / "rollout.jsonl"
    path.write_bytes(
        b"\n".join([counted(100, 900), _failed_extension("exec-a"), counted(200, None)])
    )
    records, usage = read_rollout(path)
    assert [r.id for r in records] == ["exec-a"] and usage is not None
    assert usage.last_reset == 200.0 and usage.secondary is None  # the latest record
    assert usage.primary is not None and usage.primary.used_percent == 100.0
    path.write_bytes(_failed_extension("exec-a"))
    assert read_rollout(path)[1] is None
