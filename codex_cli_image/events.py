"""Decode the JSONL event stream of ``codex exec --json`` (pure: bytes in, typed events out).

The decoder works on bytes and splits on newlines before decoding, so a UTF-8 character split
across two reads is never broken. Lines are bounded: a longer line is skipped (counted in
``oversized``) without being held in memory. Lines that are not JSON objects are counted in
``malformed`` and skipped; events and items of types we do not know are ignored, because codex
adds new ones often.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AgentMessage",
    "ErrorNotice",
    "Event",
    "EventDecoder",
    "LineDecoder",
    "OtherEvent",
    "ThreadStarted",
    "TurnCompleted",
    "TurnFailed",
    "TurnStarted",
    "decode_event",
]

_THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ThreadStarted:
    thread_id: str


@dataclass(frozen=True, slots=True)
class TurnStarted:
    pass


@dataclass(frozen=True, slots=True)
class TurnCompleted:
    usage: dict[str, int]


@dataclass(frozen=True, slots=True)
class TurnFailed:
    message: str


@dataclass(frozen=True, slots=True)
class ErrorNotice:
    """A top-level ``error`` event; ``Reconnecting...`` ones are progress, not failures."""

    message: str

    @property
    def reconnecting(self) -> bool:
        return self.message.startswith("Reconnecting...")


@dataclass(frozen=True, slots=True)
class AgentMessage:
    text: str


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """Any event or item we do not act on (reasoning, commands, future types)."""

    type: str
    data: dict[str, Any] = field(repr=False, compare=False)


Event = (
    ThreadStarted
    | TurnStarted
    | TurnCompleted
    | TurnFailed
    | ErrorNotice
    | AgentMessage
    | OtherEvent
)


class LineDecoder:
    """Split a byte stream into lines of at most ``max_line`` bytes (longer ones are dropped)."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self.oversized = 0
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._keep(chunk[start:])
                return lines
            self._keep(chunk[start:end])
            if not self._skipping:
                lines.append(bytes(self._buffer))
            self._skipping = False
            self._buffer.clear()
            start = end + 1

    def flush(self) -> list[bytes]:
        """The last line, if the stream did not end with a newline."""
        line = bytes(self._buffer)
        skipped = self._skipping
        self._buffer.clear()
        self._skipping = False
        return [] if skipped or not line else [line]

    def _keep(self, part: bytes) -> None:
        if self._skipping:
            return
        if len(self._buffer) + len(part) > self.max_line:
            self._buffer.clear()
            self._skipping = True
            self.oversized += 1
            return
        self._buffer += part


def decode_event(line: bytes) -> Event | None:
    """One JSONL line as an event; None when it is not a JSON object with a string ``type``."""
    line = line.strip()
    if not line:
        return None
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):  # absurd nesting is malformed too
        return None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return None
    kind: str = data["type"]
    if kind == "thread.started" and isinstance(data.get("thread_id"), str):
        # It becomes a folder name under $CODEX_HOME (and a file we delete is found there):
        # a thread id that could leave that folder is not one (codex makes UUIDs).
        if not _THREAD_ID.fullmatch(data["thread_id"]):
            return None
        return ThreadStarted(data["thread_id"])
    if kind == "turn.started":
        return TurnStarted()
    if kind == "turn.completed":
        usage = data.get("usage")
        numbers = (
            {k: v for k, v in usage.items() if isinstance(v, int)}
            if isinstance(usage, dict)
            else {}
        )
        return TurnCompleted(numbers)
    if kind == "turn.failed":
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        return TurnFailed(message if isinstance(message, str) else "")
    if kind == "error" and isinstance(data.get("message"), str):
        return ErrorNotice(data["message"])
    if kind == "item.completed":
        item = data.get("item")
        if isinstance(item, dict) and item.get("type") == "agent_message":
            text = item.get("text")
            return AgentMessage(text if isinstance(text, str) else "")
    return OtherEvent(kind, data)


class EventDecoder:
    """Incremental: ``feed(chunk)`` gives the events that chunk completes; ``flush()`` the rest."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._lines = LineDecoder(max_line)
        self.malformed = 0

    @property
    def oversized(self) -> int:
        return self._lines.oversized

    def feed(self, chunk: bytes) -> list[Event]:
        return self._decode(self._lines.feed(chunk))

    def flush(self) -> list[Event]:
        return self._decode(self._lines.flush())

    def _decode(self, lines: list[bytes]) -> list[Event]:
        events = []
        for line in lines:
            event = decode_event(line)
            if event is not None:
                events.append(event)
            elif line.strip():
                self.malformed += 1
        return events
