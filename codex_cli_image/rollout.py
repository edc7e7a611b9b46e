"""Read codex's session log ("rollout") for the image record of one thread.

``codex exec --json`` prints nothing about images; only the rollout
(``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<thread_id>.jsonl``) records the image call,
in one of three shapes depending on the version (codex-facts section 4):

- 0.144+ (the client-side image tool; seen on 0.149-0.171): ``event_msg`` ``item_completed``
  whose item is ``{"type": "Extension", "kind": "image_gen.generation", "status", "result",
  "savedPath", "revisedPrompt", "failure"}``;
  a failed call has ``"failure": null`` there (seen on 0.169 and 0.171), its reason being the
  ``function_call_output`` of the same call id (``"image generation failed: http 403 ..."``) on
  a direct call, or, in code mode, the ``custom_tool_call_output`` of the ``exec`` call whose
  script called the tool (another call id: matched by order)
- before: ``event_msg`` ``image_generation_end`` ``{call_id, status, result, saved_path,
  revised_prompt}`` and ``response_item`` ``image_generation_call`` ``{id, status, result,
  revised_prompt}`` (0.125-0.143; also the only trace of a hosted image on 0.149+).

Parsing is pure and incremental (:class:`RecordReader`: ``feed(chunk)``, then ``close()``) and
its memory is bounded whatever the log holds: the image's base64 (27 MB for a 20 MB PNG, on one
line) is never held as text or handed to the JSON decoder. A string longer than
``STRING_LIMIT`` is cut out of its line before the line is parsed; when the caller wants the
image, the first such ``result`` of an image record is base64-decoded on the fly instead.
:func:`find_rollout` is the only file lookup.
"""

from __future__ import annotations

import binascii
import datetime as dt
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .endpoint import find_endpoint_failure
from .usage import UsageLimits, from_rollout

__all__ = [
    "STRING_LIMIT",
    "ImageRecord",
    "RecordReader",
    "find_rollout",
    "parse_image_records",
    "read_image_records",
    "read_rollout",
]

# Only lines that can hold an image record are parsed: the others can be large and plentiful.
_MARKERS = (b"image_gen", b"image_generation", b"image generation")
# Seen when codex's code-mode host (the process that runs the exec tool's JavaScript, and so the
# image tool) dies: the exec call's output says so, and no image record follows.
_HOST_CRASH = b"code-mode session closed"
# codex's record of the usage windows the backend reported (token_count events, every release).
_RATE_LIMITS = b'"rate_limits"'
HOST_CRASHED = "codex's code-mode host crashed (gRPC code-mode session closed)"
STRING_LIMIT = 256 * 1024
"""A JSON string longer than this (bytes) is cut out of its line before the line is parsed."""
_LINE_LIMIT = 4 * 1024 * 1024  # what is left of a line after the cuts; beyond it, no record
_READ_BYTES = 256 * 1024
_STRING_STOP = re.compile(rb'["\\]')
_RESULT_KEY = re.compile(rb'"result"\s*:\s*$')


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: str
    status: str | None = None
    image: bytes | None = field(default=None, repr=False)
    """The image codex kept in the log, decoded (only when asked for: ``keep_image``)."""
    saved_path: str | None = None
    revised_prompt: str | None = None
    failure: str | None = None
    invalid: str | None = None
    """Why the image kept in the log could not be decoded."""


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


def read_image_records(path: Path, *, keep_image: bool = True) -> list[ImageRecord]:
    """The image records of the rollout at ``path``, read in bounded chunks.

    keep_image: decode the first image the log holds into its record's ``image`` (the others
    are skipped, never decoded); without it no image is decoded at all.
    """
    return read_rollout(path, keep_image=keep_image)[0]


def read_rollout(
    path: Path, *, keep_image: bool = True
) -> tuple[list[ImageRecord], UsageLimits | None]:
    """:func:`read_image_records`, and the usage windows codex recorded last
    (:attr:`RecordReader.usage_limits`), in one read."""
    reader = RecordReader(keep_image=keep_image)
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_BYTES):
            reader.feed(chunk)
    return reader.close(), reader.usage_limits


def parse_image_records(lines: Iterable[bytes], *, keep_image: bool = True) -> list[ImageRecord]:
    """Image records in the order they first appear; records of one call id are merged."""
    reader = RecordReader(keep_image=keep_image)
    for line in lines:
        reader.feed(line)
        reader.feed(b"\n")
    return reader.close()


class RecordReader:
    """The image records of a rollout fed in chunks of any size (pure, bounded memory).

    Each line is copied into a buffer except the contents of strings longer than
    :data:`STRING_LIMIT`, which become ``""``; one such string that is the ``result`` of an image
    record is decoded into the record's ``image`` as it streams by, when ``keep_image`` is set
    and no image was kept yet.
    """

    def __init__(self, *, keep_image: bool = True) -> None:
        self._keep_image = keep_image
        self._records: dict[str, ImageRecord] = {}
        # Code mode: failed image records still waiting for the exec call's output that says why.
        self._unexplained: list[str] = []
        self._image_kept = False
        self._line = bytearray()
        self._in_string = False
        self._escaped = False
        self._string_start = 0
        self._string_bytes = 0
        self._cut = False  # the current string is being left out of the line
        self._sink: _Base64Sink | None = None
        self._line_image: _Base64Sink | None = None
        self._too_long = False
        self._host_crashed = False
        self.usage_limits: UsageLimits | None = None
        """The usage windows of codex's last ``token_count`` record that had any (codex-facts
        section 11)."""

    @property
    def limits_reset_at(self) -> float | None:
        """When the latest of the usage windows codex recorded resets (Unix time): no usage
        limit codex reported lasts longer."""
        return None if self.usage_limits is None else self.usage_limits.last_reset

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                self._scan(chunk, start, len(chunk))
                return
            self._scan(chunk, start, newline)
            self._end_line()
            start = newline + 1

    def close(self) -> list[ImageRecord]:
        """End the input (a last line without a newline counts) and return the records; a
        crash of codex's code-mode host without an image is a failed record saying so."""
        self._end_line()
        records = list(self._records.values())
        if self._host_crashed and not any(r.status == "completed" for r in records):
            records.append(ImageRecord(id="code-mode-host", status="failed", failure=HOST_CRASHED))
        return records

    # --- one line, scanned for strings ---

    def _scan(self, data: bytes, pos: int, end: int) -> None:
        while pos < end:
            if not self._in_string:
                quote = data.find(b'"', pos, end)
                stop = end if quote < 0 else quote + 1
                self._keep(data[pos:stop])
                pos = stop
                if quote >= 0:
                    self._open_string()
                continue
            if self._escaped:  # the byte after a backslash belongs to the string, whatever it is
                self._content(data[pos : pos + 1])
                self._escaped = False
                pos += 1
                continue
            found = _STRING_STOP.search(data, pos, end)
            stop = end if found is None else found.start()
            self._content(data[pos:stop])
            pos = stop
            if found is None:
                continue
            if data[stop] == 0x5C:  # backslash
                self._content(b"\\")
                self._escaped = True
            else:
                self._close_string()
                self._keep(b'"')
            pos = stop + 1

    def _keep(self, data: bytes) -> None:
        if self._too_long:
            return
        self._line += data
        if len(self._line) > _LINE_LIMIT:
            self._too_long = True
            self._line.clear()

    def _open_string(self) -> None:
        self._in_string = True
        self._string_start = len(self._line)
        self._string_bytes = 0
        self._cut = False

    def _content(self, data: bytes) -> None:
        if not data:
            return
        self._string_bytes += len(data)
        if not self._cut:
            if self._string_bytes <= STRING_LIMIT:
                self._keep(data)
                return
            self._start_cut()
        if self._sink is not None:
            self._sink.feed(data)

    def _start_cut(self) -> None:
        """The string grew too long: take it out of the line (and decode it, if it is the image)."""
        self._cut = True
        head = bytes(self._line[self._string_start :])
        prefix = self._line[: self._string_start - 1]  # before the opening quote
        del self._line[self._string_start :]
        wanted = self._keep_image and not self._image_kept and self._line_image is None
        if wanted and _RESULT_KEY.search(prefix) and any(m in prefix for m in _MARKERS):
            self._sink = _Base64Sink()
            self._sink.feed(head)

    def _close_string(self) -> None:
        self._in_string = False
        if self._sink is not None:
            self._line_image = self._sink
            self._sink = None

    def _end_line(self) -> None:
        line, image, too_long = bytes(self._line), self._line_image, self._too_long
        self._line.clear()
        self._in_string = self._escaped = self._cut = self._too_long = False
        self._sink = self._line_image = None
        if _HOST_CRASH in line:
            self._host_crashed = True
        if not too_long and _RATE_LIMITS in line:
            self._rate_limits(line)
        if too_long or not any(marker in line for marker in _MARKERS):
            return
        try:
            entry = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested too deep: not ours
            return
        if not isinstance(entry, dict):
            return
        script = _script_failure(entry)
        if script is not None:
            self._explain(script)
            return
        parsed = _record(entry)
        if parsed is None:
            return
        record, result = parsed
        if image is None and result and self._keep_image and not self._image_kept:
            image = _Base64Sink()
            image.feed(result.encode("ascii", "replace"))
        if image is not None:
            record = self._with_image(record, image)
        known = self._records.get(record.id)
        self._records[record.id] = merged = record if known is None else _merge(known, record)
        if merged.status == "failed" and not merged.failure and merged.id.startswith("exec-"):
            if merged.id not in self._unexplained:
                self._unexplained.append(merged.id)

    def _rate_limits(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return
        payload = entry.get("payload") if isinstance(entry, dict) else None
        if entry.get("type") != "event_msg" or not isinstance(payload, dict):
            return
        limits = payload.get("rate_limits") if payload.get("type") == "token_count" else None
        if isinstance(limits, dict):
            self.usage_limits = from_rollout(limits) or self.usage_limits

    def _explain(self, failure: str) -> None:
        """The output of a code-mode ``exec`` call whose script failed on the image tool.

        Its call id is the exec call's, not the image record's (``exec-<uuid>``): it explains the
        oldest failed image record still unexplained, which the script made just before. The
        output is the script's, and the script is the model's: without a failed image record
        that codex wrote, the line is the model's own words (a forged failure), and ignored.
        """
        if self._unexplained:
            record_id = self._unexplained.pop(0)
            self._records[record_id] = replace(self._records[record_id], failure=failure)

    def _with_image(self, record: ImageRecord, sink: _Base64Sink) -> ImageRecord:
        data, error = sink.result()
        if data is None:
            return replace(record, invalid=f"its base64 is not valid ({error})")
        self._image_kept = True
        return replace(record, image=data)


class _Base64Sink:
    """Decodes base64 fed in pieces of any size; keeps the first error instead of raising."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._pending = b""
        self._padded = False
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        data = self._pending + data
        usable = len(data) - len(data) % 4
        self._pending = data[usable:]
        if usable:
            self._decode(data[:usable])

    def _decode(self, data: bytes) -> None:
        if self._padded:
            self.error = "data after the padding"
            return
        try:
            # Python 3.10 has no strict_mode: check the alphabet ourselves.
            if data.rstrip(b"=").translate(None, _BASE64_ALPHABET):
                raise binascii.Error("a character outside the base64 alphabet")
            self._out.write(binascii.a2b_base64(data))
        except binascii.Error as exc:
            self.error = str(exc)
            return
        self._padded = data.endswith(b"=")

    def result(self) -> tuple[bytes, None] | tuple[None, str]:
        """The decoded bytes, or why there are none."""
        if self.error is None and self._pending:
            self.error = "the data is not a whole number of base64 quartets"
        if self.error is not None:
            return None, self.error
        # getvalue() hands over the buffer without copying it (CPython): no second 20 MB.
        return self._out.getvalue(), None


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _record(entry: dict[str, Any]) -> tuple[ImageRecord, str | None] | None:
    """The record a log entry holds, with its base64 image text (decoded by the caller)."""
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
                saved_path=_text(item.get("savedPath")),
                revised_prompt=_text(item.get("revisedPrompt")),
                failure=_failure(item.get("failure")),
            ), _text(item.get("result"))
    if entry.get("type") == "event_msg" and kind == "image_generation_end":
        return ImageRecord(
            id=_text(payload.get("call_id")) or "?",
            status=_text(payload.get("status")),
            saved_path=_text(payload.get("saved_path")),
            revised_prompt=_text(payload.get("revised_prompt")),
        ), _text(payload.get("result"))
    if entry.get("type") == "response_item" and kind == "function_call_output":
        # Seen on 0.169: a failed call's record has "failure": null; the reason is the output
        # codex returned to the model for that call id.
        output = payload.get("output")
        if isinstance(output, str) and output.startswith("image generation failed"):
            return ImageRecord(id=_text(payload.get("call_id")) or "?", failure=output[:2000]), None
        return None
    if entry.get("type") == "response_item" and kind == "image_generation_call":
        return ImageRecord(
            id=_text(payload.get("id")) or "?",
            status=_text(payload.get("status")),
            revised_prompt=_text(payload.get("revised_prompt")),
        ), _text(payload.get("result"))
    return None


def _script_failure(entry: dict[str, Any]) -> str | None:
    """The failure line of a code-mode exec output that reports a failed image call.

    Seen on 0.169 and 0.171: ``{"type": "custom_tool_call_output", "call_id", "output": [{"type":
    "input_text", "text": "Script error:\\nimage generation failed: http 403 ..."}, ...]}``.
    """
    payload = entry.get("payload")
    if entry.get("type") != "response_item" or not isinstance(payload, dict):
        return None
    if payload.get("type") != "custom_tool_call_output":
        return None
    output = payload.get("output")
    parts = output if isinstance(output, list) else [output]
    for part in parts:
        text = part.get("text") if isinstance(part, dict) else part
        line = find_endpoint_failure(text) if isinstance(text, str) else None
        if line is not None:
            return line
    return None


def _merge(old: ImageRecord, new: ImageRecord) -> ImageRecord:
    return replace(
        old,
        status=new.status or old.status,
        image=old.image or new.image,
        saved_path=new.saved_path or old.saved_path,
        revised_prompt=new.revised_prompt or old.revised_prompt,
        failure=new.failure or old.failure,
        invalid=None if (old.image or new.image) else (new.invalid or old.invalid),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _failure(value: object) -> str | None:
    if isinstance(value, dict):
        message = value.get("message") or value.get("code")
        return message if isinstance(message, str) else json.dumps(value)[:500]
    return _text(value)
