"""What a codex binary says about itself (its version, the feature names it knows), kept on disk
per binary, so that a command-line call does not spawn codex to ask again.

An entry is keyed by the stamps of the files that make up the command (resolved path, size,
mtime, ctime, inode): an update or reinstall of codex changes them, and the entry is then not
used. Only answers that do not depend on the user's configuration are kept. Reading or writing
the cache never fails a call: a missing, unreadable or corrupt entry means "ask codex".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Stamp = tuple[str, int, int, int, int] | None

CACHE_ENV = "CODEX_IMAGE_CACHE_DIR"
_FORMAT = 2


def stamp(path: str | os.PathLike[str]) -> Stamp:
    """What tells a file from its replacement: resolved path, size, mtime, ctime and inode.

    Not the mtime alone: npm sets every packaged file's mtime to one fixed date, so two codex
    releases installed in turn can share it; an install always changes the ctime.
    """
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
    except (OSError, ValueError):
        return None
    return (real, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def cache_dir(env: Mapping[str, str], platform: str = sys.platform) -> Path | None:
    """``$CODEX_IMAGE_CACHE_DIR``, else the platform's per-user cache folder (``~/.cache``,
    ``~/Library/Caches``, ``%LOCALAPPDATA%``); None when there is no home to put it in."""
    chosen = env.get(CACHE_ENV)
    if chosen:
        return Path(os.path.abspath(chosen))  # fixed now: a later chdir must not move it
    return user_dir("cache", env, platform)


# Where each kind of per-user folder is: Windows (variable, below it), macOS (below the home),
# elsewhere the XDG variable or its default below the home.
_USER_DIRS = {
    "cache": (("LOCALAPPDATA", "codex-cli-image/Cache"), "Library/Caches",
              ("XDG_CACHE_HOME", ".cache")),
    "config": (("APPDATA", "codex-cli-image"), "Library/Application Support",
               ("XDG_CONFIG_HOME", ".config")),
}  # fmt: skip


def user_dir(
    kind: Literal["cache", "config"], env: Mapping[str, str], platform: str = sys.platform
) -> Path | None:
    """Our per-user ``cache`` or ``config`` folder on this platform; None without a home."""
    (win_var, win_sub), mac_sub, (xdg_var, xdg_default) = _USER_DIRS[kind]
    if platform == "win32":
        base = env.get(win_var)
        return Path(base, *win_sub.split("/")) if base else None
    home = env.get("HOME")
    if platform == "darwin":
        return Path(home, *mac_sub.split("/"), "codex-cli-image") if home else None
    xdg = env.get(xdg_var)
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "codex-cli-image"
    return Path(home) / xdg_default / "codex-cli-image" if home else None


@dataclass(frozen=True, slots=True)
class Facts:
    version: str | None = None
    """What ``codex --version`` printed (when it had to be asked)."""
    features: tuple[str, ...] | None = None
    """Every name ``codex features list`` printed."""
    yield_setting: bool | None = None
    """Whether it takes :data:`~codex_cli_image.launcher.YIELD_SETTING` (asked with the names)."""


def _entry(directory: Path, stamps: Sequence[Stamp]) -> Path:
    key = hashlib.sha256(json.dumps([_FORMAT, *stamps]).encode()).hexdigest()[:32]
    return directory / "binaries" / f"{key}.json"


def load(directory: Path | None, stamps: Sequence[Stamp]) -> Facts:
    """The facts kept for the binary with these stamps (empty when none, or unusable)."""
    if directory is None or None in stamps:
        return Facts()
    try:
        data = json.loads(_entry(directory, stamps).read_text("utf-8"))
    except (OSError, ValueError):
        return Facts()
    if not isinstance(data, dict) or data.get("stamps") != json.loads(json.dumps(list(stamps))):
        return Facts()
    version = data.get("version")
    features = data.get("features")
    yield_setting = data.get("yield_setting")
    return Facts(
        version if isinstance(version, str) else None,
        tuple(features)
        if isinstance(features, list) and all(isinstance(f, str) for f in features)
        else None,
        yield_setting if isinstance(yield_setting, bool) else None,
    )


def save(directory: Path | None, stamps: Sequence[Stamp], facts: Facts) -> None:
    """Keep ``facts`` for this binary (written whole or not at all; errors are ignored)."""
    if directory is None or None in stamps or facts == Facts():
        return
    target = _entry(directory, stamps)
    data = {"stamps": list(stamps), "version": facts.version, "features": facts.features,
            "yield_setting": facts.yield_setting}  # fmt: skip
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(data, file)
            os.replace(tmp, target)
        except BaseException:  # an interrupt too: no temporary file left behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
