"""Read codex's session log ("rollout") for the image record of one thread.

``codex exec --json`` prints nothing about images; only the rollout
(``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<thread_id>.jsonl``) records the image call,
in one of three shapes depending on the version (codex-facts section 4):

- 0.149+: ``event_msg`` ``item_completed`` whose item is ``{"type": "Extension",
  "kind": "image_gen.generation", "status", "result", "savedPath", "revisedPrompt", "failure"}``;
  a failed call has ``"failure": null`` there (seen on 0.169), its reason being the
  ``function_call_output`` of the same call id (``"image generation failed: http 403 ..."``)
- before: ``event_msg`` ``image_generation_end`` ``{call_id, status, result, saved_path,
  revised_prompt}`` and ``response_item`` ``image_generation_call`` ``{id, status, result,
  revised_prompt}`` (also the only trace of a hosted image on 0.149+).

Parsing is pure (:func:`parse_image_records`); :func:`find_rollout` is the only file lookup.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["ImageRecord", "find_rollout", "parse_image_records", "read_image_records"]

# Only lines that can hold an image record are parsed: the others can be large and plentiful.
_MARKERS = (b"image_gen", b"image_generation", b"image generation")


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: str
    status: str | None = None
    result: str | None = None
    """The image as base64, when codex kept it."""
    saved_path: str | None = None
    revised_prompt: str | None = None
    failure: str | None = None


def find_rollout(
    codex_home: Path, thread_id: str, *, around: dt.datetime | None = None
) -> Path | None:
    """The rollout file of ``thread_id``: the day folders near ``around`` first, then all."""
    sessions = codex_home / "sessions"
    suffix = f"-{thread_id}.jsonl"

    def newest(paths: Iterable[Path]) -> Path | None:
        # Matched by name, not in the glob pattern: a pattern per thread would fill the
        # interpreter's pattern caches in a long-lived process, and an id is no pattern.
        found = sorted(p for p in paths if p.name.endswith(suffix))
        return found[-1] if found else None

    moment = around or dt.datetime.now()
    for day in (moment, moment - dt.timedelta(days=1), moment + dt.timedelta(days=1)):
        folder = sessions / day.strftime("%Y") / day.strftime("%m") / day.strftime("%d")
        found = newest(folder.glob("rollout-*.jsonl")) if folder.is_dir() else None
        if found is not None:
            return found
    return newest(sessions.glob("*/*/*/rollout-*.jsonl")) if sessions.is_dir() else None


def read_image_records(path: Path) -> list[ImageRecord]:
    with path.open("rb") as handle:
        return parse_image_records(handle)


def parse_image_records(lines: Iterable[bytes]) -> list[ImageRecord]:
    """Image records in the order they first appear; records of one call id are merged."""
    records: dict[str, ImageRecord] = {}
    for line in lines:
        if not any(marker in line for marker in _MARKERS):
            continue
        try:
            entry = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        record = _record(entry) if isinstance(entry, dict) else None
        if record is None:
            continue
        known = records.get(record.id)
        records[record.id] = record if known is None else _merge(known, record)
    return list(records.values())


def _record(entry: dict[str, Any]) -> ImageRecord | None:
    payload = entry.get("payload")
    if not isinstance(payload, dict):
        return None
    kind = payload.get("type")
    if entry.get("type") == "event_msg" and kind == "item_completed":
        item = payload.get("item")
        if isinstance(item, dict) and item.get("kind") == "image_gen.generation":
            return ImageRecord(
                id=_text(item.get("id")) or "?",
                status=_text(item.get("status")),
                result=_text(item.get("result")),
                saved_path=_text(item.get("savedPath")),
                revised_prompt=_text(item.get("revisedPrompt")),
                failure=_failure(item.get("failure")),
            )
    if entry.get("type") == "event_msg" and kind == "image_generation_end":
        return ImageRecord(
            id=_text(payload.get("call_id")) or "?",
            status=_text(payload.get("status")),
            result=_text(payload.get("result")),
            saved_path=_text(payload.get("saved_path")),
            revised_prompt=_text(payload.get("revised_prompt")),
        )
    if entry.get("type") == "response_item" and kind == "function_call_output":
        # Seen on 0.169: a failed call's record has "failure": null; the reason is the output
        # codex returned to the model for that call id.
        output = payload.get("output")
        if isinstance(output, str) and output.startswith("image generation failed"):
            return ImageRecord(id=_text(payload.get("call_id")) or "?", failure=output[:2000])
        return None
    if entry.get("type") == "response_item" and kind == "image_generation_call":
        return ImageRecord(
            id=_text(payload.get("id")) or "?",
            status=_text(payload.get("status")),
            result=_text(payload.get("result")),
            revised_prompt=_text(payload.get("revised_prompt")),
        )
    return None


def _merge(old: ImageRecord, new: ImageRecord) -> ImageRecord:
    return replace(
        old,
        status=new.status or old.status,
        result=new.result or old.result,
        saved_path=new.saved_path or old.saved_path,
        revised_prompt=new.revised_prompt or old.revised_prompt,
        failure=new.failure or old.failure,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _failure(value: object) -> str | None:
    if isinstance(value, dict):
        message = value.get("message") or value.get("code")
        return message if isinstance(message, str) else json.dumps(value)[:500]
    return _text(value)
