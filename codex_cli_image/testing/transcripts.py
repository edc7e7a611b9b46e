"""Recorded transcripts of a codex run, normalised so that two runs (or the real CLI and the fake)
can be compared: ids, paths, times and image data become placeholders.

A transcript holds what our code reads: the ``--json`` events on stdout, the image records of the
session rollout, the names of the files codex saved, and the stderr lines that report a failed
image call. :func:`shape` reduces one further to its
structure (types and keys), which is what the fake codex must share with the real one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["record", "shape"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CALL = re.compile(r"\b(call|ig|fc|ctc|msg|gen|exec|fco|at|resp)[_-][0-9A-Za-z-]{6,}")
_CLOCK = re.compile(r"(?:[A-Z][a-z]{2} \d{1,2}(?:st|nd|rd|th)?, \d{4} )?\d{1,2}:\d{2} [AP]M")
_ROLLOUT_KEYS = ("image_gen", "image_generation", "image generation")
_WALL = re.compile(r"Wall time [\d.]+ seconds")
_STDERR_KEYS = ("image generation failed",)
_STDERR_STAMP = re.compile(r"^\S*\d{4}-\d{2}-\d{2}T[\d:.]+Z\s+")
_BODY = re.compile(r'Some\(".*"\)')


def record(stdout: bytes, codex_home: Path, stderr: bytes = b"") -> dict[str, Any]:
    """The normalised transcript of one run whose state is in ``codex_home``."""
    home = str(codex_home)
    said = [
        _text(_STDERR_STAMP.sub("", line), home)
        for line in stderr.decode("utf-8", "replace").splitlines()
        if any(key in line for key in _STDERR_KEYS)
    ]
    events = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        try:
            events.append(_scrub(json.loads(line), home))
        except ValueError:
            events.append({"unparsed": _text(line, home)})
    records = []
    for rollout in sorted((codex_home / "sessions").rglob("rollout-*.jsonl")):
        for line in rollout.read_text("utf-8").splitlines():
            if any(key in line for key in _ROLLOUT_KEYS):
                entry = json.loads(line)
                payload = entry.get("payload", {})
                if payload.get("type") == "additional_tools":
                    continue  # the tool list: long, and not an image record
                records.append(_scrub({"type": entry.get("type"), "payload": payload}, home))
    files = sorted(
        _text(p.name, home) + (" (empty)" if p.stat().st_size == 0 else "")
        for p in (codex_home / "generated_images").rglob("*")
        if p.is_file()
    )
    return {"events": events, "image_records": records, "files": files, "stderr": said}


def shape(transcript: dict[str, Any]) -> dict[str, Any]:
    """Only the structure: event types with their keys, record types with their keys."""

    def keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: keys(v) for k, v in sorted(value.items()) if k not in _FREE_KEYS}
        if isinstance(value, list):
            return [keys(v) for v in value[:1]]
        return type(value).__name__

    return {
        "events": [keys(e) for e in transcript["events"]],
        "image_records": [keys(r) for r in transcript["image_records"]],
        "files": transcript["files"],
        # The line's form, not the backend's body it quotes.
        "stderr": [_BODY.sub("Some(<BODY>)", line) for line in transcript.get("stderr", [])],
    }


# Keys left out of the structure comparison: timing, ordering and routing metadata that the
# fake does not reproduce (the recordings keep them).
_FREE_KEYS = frozenset({"timestamp", "ordinal", "metadata", "started_at_ms", "completed_at_ms",
                        "internal_chat_message_metadata_passthrough", "turn_id"})  # fmt: skip


def _scrub(value: Any, home: str) -> Any:
    if isinstance(value, dict):
        return {k: _field(k, v, home) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, home) for v in value]
    if isinstance(value, str):
        return _text(value, home)
    return value


_TIMES = frozenset({"timestamp", "started_at_ms", "completed_at_ms", "create_time", "created"})


def _field(key: str, value: Any, home: str) -> Any:
    if key in ("result", "b64_json") and isinstance(value, str) and value:
        return "<BASE64>"
    if key in _TIMES and isinstance(value, (int, float, str)):
        return "<TIME>"
    if key == "text" and isinstance(value, str) and len(value) > 200:
        return value[:200] + "…"
    return _scrub(value, home)


def _text(text: str, home: str) -> str:
    text = text.replace(home, "<CODEX_HOME>")
    text = _UUID.sub("<UUID>", text)
    text = _CLOCK.sub("<TIME>", text)
    text = _WALL.sub("Wall time <SECONDS> seconds", text)
    return _CALL.sub(lambda m: f"{m.group(1)}_<ID>", text)
