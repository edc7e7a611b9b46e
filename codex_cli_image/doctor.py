"""Everything a user or daemon needs to know before the first image, without spending quota."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import CodexImageError, Kind
from .launcher import Source, locate, probe_version

__all__ = ["CodexInfo", "DoctorReport", "Problem", "doctor"]


@dataclass(frozen=True, slots=True)
class CodexInfo:
    path: str
    source: Source
    via_shim: bool
    shim: str | None
    version: str | None
    removed_env: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    kind: Kind
    reason: str
    message: str
    hint: str

    @classmethod
    def from_error(cls, error: CodexImageError) -> Problem:
        return cls(error.kind, error.reason, error.message, error.hint)


@dataclass(frozen=True, slots=True)
class DoctorReport:
    codex: CodexInfo | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        codex = None
        if self.codex is not None:
            codex = {
                "path": self.codex.path,
                "source": self.codex.source,
                "via_shim": self.codex.via_shim,
                "shim": self.codex.shim,
                "version": self.codex.version,
                "removed_env": list(self.codex.removed_env),
            }
        return {
            "ok": self.ok,
            "codex": codex,
            "problems": [
                {"kind": p.kind, "reason": p.reason, "message": p.message, "hint": p.hint}
                for p in self.problems
            ],
        }


def doctor(
    *,
    codex: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> DoctorReport:
    """Find codex and ask its version; report what stands in the way instead of raising."""
    problems: list[Problem] = []
    try:
        found = locate(codex, env=env)
    except CodexImageError as exc:
        return DoctorReport(None, (Problem.from_error(exc),))
    version: str | None = None
    try:
        version = str(probe_version(found))
    except CodexImageError as exc:
        problems.append(Problem.from_error(exc))
    info = CodexInfo(
        path=str(found.path),
        source=found.source,
        via_shim=found.via_shim,
        shim=str(found.shim) if found.shim else None,
        version=version,
        removed_env=found.removed_env,
    )
    return DoctorReport(info, tuple(problems))
