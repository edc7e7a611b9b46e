"""What one image call reports: its progress on the way and the delivered image (values only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .request import Geometry
from .usage import UsageLimits

__all__ = ["FittedImage", "ImageResult", "Phase", "Progress", "ProgressCallback"]

Phase = Literal[
    "queued",
    "started",
    "thread_started",
    "reconnecting",
    "agent_message",
    "image_saved",
    "retrying",
    "working",
    "finished",
]


@dataclass(frozen=True, slots=True)
class Progress:
    """A step of a generation, for ``on_progress``."""

    phase: Phase
    elapsed_s: float
    attempt: int = 1
    message: str | None = None
    thread_id: str | None = None


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class FittedImage:
    """The exact-size copy made by ``fit`` (the original is kept)."""

    path: Path
    width: int
    height: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class ImageResult:
    """A delivered image and how it was made."""

    path: Path
    bytes: int
    sha256: str
    width: int
    height: int
    format: str
    thread_id: str
    codex_version: str | None
    elapsed_s: float
    usage: dict[str, int] | None
    revised_prompt: str | None
    attempts: int
    warnings: tuple[str, ...]
    image_source: str
    """``file`` (codex saved it) or ``rollout`` (decoded from the session log)."""
    has_alpha: bool = False
    requested: Geometry = Geometry()
    geometry_mismatch: bool = False
    """The delivered aspect is off the requested one (backends may ignore sizes)."""
    fitted: FittedImage | None = None
    """The exact-size copy asked for with ``fit`` (beside the original)."""
    usage_limits: UsageLimits | None = None
    """The subscription's usage windows as codex recorded them in this run (None when it
    recorded none)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "path": str(self.path),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "thread_id": self.thread_id,
            "codex_version": self.codex_version,
            "elapsed_s": round(self.elapsed_s, 3),
            "usage": self.usage,
            "revised_prompt": self.revised_prompt,
            "attempts": self.attempts,
            "warnings": list(self.warnings),
            "image_source": self.image_source,
            "has_alpha": self.has_alpha,
            "requested": self.requested.to_dict(),
            "geometry_mismatch": self.geometry_mismatch,
            "fitted": self.fitted.to_dict() if self.fitted else None,
            "usage_limits": self.usage_limits.to_dict() if self.usage_limits else None,
        }
