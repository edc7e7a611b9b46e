"""Where the image goes: checked before codex runs, written atomically, never over a user's file.

Delivery writes a temporary file in the destination directory, fsyncs it, then moves it into
place without replacing anything (a hard link on POSIX, a rename on Windows, both of which fail
when the name exists). If the name appeared while codex was working, the image is kept under a
unique sibling name and the caller is told: the image is never lost and nothing is overwritten
unless ``overwrite`` was asked for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import re
import secrets
import sys
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._watchdog import WATCHDOG
from .errors import InputError

__all__ = ["CLAIMS", "Claims", "Target", "path_key", "plan_output", "slug", "write_atomically"]

_SLUG_WORDS = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: the exact file to create, and whether it may replace one."""

    path: Path
    overwrite: bool
    named_by_us: bool = False
    """The name was made from the prompt (directory output): taking the next free one is silent."""


def slug(prompt: str, limit: int = 40) -> str:
    """A file-name-safe summary: ``"A red fox, in snow!"`` -> ``"a-red-fox-in-snow"``."""
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode().lower()
    text = ""
    for word in _SLUG_WORDS.findall(ascii_text):
        candidate = f"{text}-{word}" if text else word
        if len(candidate) > limit:
            break
        text = candidate
    return text or "image"


def plan_output(
    output: str | os.PathLike[str] | None,
    prompt: str,
    *,
    overwrite: bool = False,
    now: dt.datetime | None = None,
) -> Target:
    """Check the requested output before any work is done. Raises :class:`InputError`.

    ``output`` may name a file (``.png`` or no suffix) or an existing directory (the file is then
    named from the prompt and the time); None means the current directory.
    """
    if output is None or os.fspath(output) == "":
        try:
            raw = Path.cwd()
        except OSError as exc:
            raise InputError(
                f"The current folder, where the image would go, cannot be used: "
                f"{exc.strerror or exc} (was it deleted?).",
                reason="output_dir_missing",
                hint="Name the output (-o, output=), or run from a folder that exists.",
            ) from None
    else:
        raw = Path(output).expanduser()
    path = raw.absolute()
    if path.is_symlink():
        raise InputError(
            f"The output {path} is a symbolic link.",
            reason="output_is_symlink",
            hint="Name a regular file or directory; links are not followed, to keep their "
            "targets safe.",
        )
    if path.is_dir():
        _check_writable_dir(path, "The output directory")
        stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
        return Target(path / f"{slug(prompt)}-{stamp}.png", overwrite=False, named_by_us=True)
    if os.fspath(output or "").endswith(("/", os.sep)):
        raise InputError(
            f"The output directory {path} does not exist.",
            reason="output_dir_missing",
            hint="Create the directory first, or name a file in an existing one.",
        )
    if path.suffix and path.suffix.lower() != ".png":
        raise InputError(
            f"The output {path.name} does not end in .png, but the image is a PNG.",
            reason="output_not_png",
            hint="Name the output file with a .png suffix.",
        )
    parent = path.parent
    if not parent.is_dir():
        raise InputError(
            f"The folder {parent} for the output does not exist.",
            reason="output_dir_missing",
            hint="Create the folder first, or choose another output path.",
        )
    _check_writable_dir(parent, "The output folder")
    if path.exists() and not overwrite:
        raise InputError(
            f"The output {path} already exists.",
            reason="output_exists",
            hint="Choose another name, or pass --overwrite (overwrite=True) to replace it.",
        )
    if path.exists() and not path.is_file():
        raise InputError(
            f"The output {path} exists and is not a regular file.",
            reason="output_not_a_file",
            hint="Choose another output path.",
        )
    return Target(path, overwrite=overwrite)


def path_key(path: Path) -> str:
    """What tells two output paths apart: the real path, case-folded where file systems
    usually ignore case (macOS, Windows)."""
    key = os.path.realpath(path)
    return key.casefold() if sys.platform in ("darwin", "win32") else key


class Claims:
    """The output files being written by calls in flight in this process (any client, any
    thread): a second writer of one file is refused before codex runs for it, so that no paid
    image replaces another and no result describes a file that holds another image."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, paths: Sequence[Path]) -> Iterator[None]:
        """Hold ``paths`` for the duration; raises :class:`InputError` naming the first one
        another call holds."""
        keys = [path_key(path) for path in paths]
        with self._lock:
            for key, path in zip(keys, paths, strict=True):
                if key in self._held:
                    raise InputError(
                        f"{path} is being written by another image in progress.",
                        reason="output_in_use",
                        hint="Give each image its own output file (or name a folder), or wait "
                        "for the other one to finish.",
                    )
            self._held.update(keys)
        try:
            yield
        finally:
            with self._lock:
                self._held.difference_update(keys)


CLAIMS = Claims()
"""The process's one registry of output files being written."""


def _check_writable_dir(path: Path, what: str) -> None:
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(
            f"{what} {path} is not writable.",
            reason="output_not_writable",
            hint="Choose a folder you can write to, or fix its permissions.",
        )


def write_atomically(data: bytes, target: Target) -> tuple[Path, list[str]]:
    """Write ``data`` to ``target`` atomically; return the path used and any warnings.

    Raises OSError (disk full, folder removed): the caller keeps codex's copy in that case.
    """
    directory = target.path.parent
    staging = directory / f".{target.path.stem}.{secrets.token_hex(4)}.partial"
    watched = WATCHDOG.track_file(staging)  # if we are killed meanwhile, it is removed for us
    try:
        return _write_and_place(data, target, staging)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        WATCHDOG.drop(watched)


def _write_and_place(data: bytes, target: Target, staging: Path) -> tuple[Path, list[str]]:
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if target.overwrite:
        os.replace(staging, target.path)
        return _synced(target.path, [])
    warnings: list[str] = []
    for candidate in _candidates(target.path):
        try:
            _place_new(staging, candidate)
        except FileExistsError:
            continue
        if candidate != target.path and not target.named_by_us:
            warnings.append(
                f"{target.path.name} appeared while the image was being made; "
                f"saved as {candidate.name} instead."
            )
        return _synced(candidate, warnings)
    raise FileExistsError(errno.EEXIST, "no free file name", str(target.path))


def _candidates(path: Path) -> Iterator[Path]:
    yield path
    for n in range(1, 1000):
        yield path.with_name(f"{path.stem}-{n}{path.suffix}")


def _place_new(staging: Path, destination: Path) -> None:
    """Give ``staging`` the name ``destination`` only if that name is free (atomically)."""
    if sys.platform == "win32":
        os.rename(staging, destination)  # fails with FileExistsError when the name is taken
        return
    try:
        os.link(staging, destination)  # fails with FileExistsError when the name is taken
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (some network and FUSE file systems): claim the name, then fill it.
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        try:
            os.replace(staging, destination)
        except BaseException:
            # Never leave our empty placeholder under the user's name.
            with contextlib.suppress(OSError):
                if destination.stat().st_size == 0:
                    destination.unlink()
            raise


def _synced(path: Path, warnings: list[str]) -> tuple[Path, list[str]]:
    if sys.platform != "win32":
        # Make the new directory entry durable too, not only the file's bytes.
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    return path, warnings
