"""What was asked for beyond the prompt: geometry, transparency, reference images (pure checks).

Codex's image tool takes no size parameter (0.169), so geometry is asked for in words and the
delivered pixels are always measured and compared: backends are known to ignore sizes.
References are checked locally by their bytes, because the backend refuses unsupported types
with an opaque error after time has been spent.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .png import PngInfo, sniff

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_REFERENCES",
    "MAX_REFERENCE_BYTES",
    "Geometry",
    "ImageRequest",
    "Reference",
    "check_prompt",
    "check_references",
    "compare_geometry",
    "parse_aspect",
    "parse_size",
    "sniff",
    "stage_reference",
]

MAX_PROMPT_CHARS = 32_000
MAX_REFERENCES = 5  # the Codex image tool's limit
MAX_REFERENCE_BYTES = 25 * 1024 * 1024
ASPECT_TOLERANCE = 0.03
_NAMED_ASPECTS = {"square": (1, 1), "landscape": (3, 2), "portrait": (2, 3)}
_ACCEPTED = ("png", "jpeg", "gif", "webp")
_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "gif": ".gif", "webp": ".webp"}


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One image: the prompt and everything else that varies per image.

    The same value serves the library, batch lines, the CLI and the MCP tool. ``output``: a
    ``.png`` path or a folder (default: the current folder), never overwritten unless
    ``overwrite``. ``references``: up to 5 PNG, JPEG, GIF or WebP images to start from.
    ``aspect`` (``square``, ``landscape``, ``portrait`` or ``W:H``), ``size`` (``WxH``) and
    ``transparent`` are asked of the model; ``fit`` (``WxH``, needs Pillow) also writes an
    exact-size copy. Nothing is checked on construction: :meth:`check` does it, and every call
    that takes a request calls it before any work.
    """

    prompt: str
    output: str | os.PathLike[str] | None = None
    references: Sequence[str | os.PathLike[str]] = ()
    aspect: str | None = None
    size: str | None = None
    transparent: bool = False
    fit: str | None = None
    overwrite: bool = False
    _checked: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A list becomes a tuple (hashable, and safe from the caller changing it mid-run); a
        # single path is left for check() to refuse rather than split into characters.
        refs = self.references
        if isinstance(refs, Iterable) and not isinstance(refs, (str, bytes, os.PathLike, tuple)):
            object.__setattr__(self, "references", tuple(refs))

    def check(self, where: str | None = None) -> None:
        """The checks that need no file system: prompt, geometry, number and form of paths.

        ``where`` (e.g. ``"line 3"``) starts every message. Raises :class:`InputError`.
        A request that passed is not checked again.
        """
        if self._checked:
            return
        if not isinstance(self.references, tuple) or isinstance(self.references, os.PathLike):
            raise _invalid(where, "references is not a list of paths.",
                           'Pass a list, e.g. references=["a.png"].')  # fmt: skip
        for name in ("aspect", "size", "fit"):
            if not isinstance(getattr(self, name), (str, type(None))):
                raise _invalid(where, f"{name} is not a string.", f"Pass {name} as text.")
        for path in (self.output, *self.references):
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise _invalid(where, f"The path {path!r} is not a path.",
                               "Pass paths as strings or path objects.")  # fmt: skip
        for name in ("transparent", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise _invalid(where, f"{name} is not true or false.", "Pass true or false.")
        try:
            check_prompt(self.prompt)
            if self.aspect is not None:
                parse_aspect(self.aspect)
            for size in (self.size, self.fit):
                if size is not None:
                    parse_size(size)
        except InputError as error:
            raise _where(error, where) from None
        for path in (self.output, *self.references):
            if path is not None and "\x00" in os.fspath(path):
                raise _invalid(where, "A path contains a NUL character.", "Remove the NUL (\\0).")
        if len(self.references) > MAX_REFERENCES:
            raise _where(_too_many(len(self.references)), where)
        object.__setattr__(self, "_checked", True)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "prompt": self.prompt,
            "output": None if self.output is None else os.fspath(self.output),
            "references": [os.fspath(reference) for reference in self.references],
            "aspect": self.aspect,
            "size": self.size,
            "transparent": self.transparent,
            "fit": self.fit,
        }
        if self.overwrite:  # only when set, as a batch line would say it
            data["overwrite"] = True
        return data


IMAGE_FIELDS = frozenset(
    {"output", "references", "aspect", "size", "transparent", "fit", "overwrite"}
)
"""The per-image keywords: the fields of :class:`ImageRequest` but the prompt."""


def _where(error: InputError, where: str | None) -> InputError:
    return error.at(where)


def _invalid(where: str | None, message: str, hint: str) -> InputError:
    return _where(InputError(message, reason="invalid_request", hint=hint), where)


def _too_many(count: int) -> InputError:
    return InputError(
        f"{count} references were given; at most {MAX_REFERENCES} are allowed.",
        reason="too_many_references",
        hint=f"Pass at most {MAX_REFERENCES} references (the Codex image tool's limit).",
    )


def check_prompt(prompt: str) -> str:
    """The prompt, or an :class:`InputError` saying what is wrong with it."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(
            "The prompt is empty.",
            reason="empty_prompt",
            hint='Describe the image to make, e.g. "a red fox in the snow".',
        )
    if "\x00" in prompt:
        raise InputError(
            "The prompt contains a NUL character.",
            reason="invalid_prompt",
            hint="Remove the NUL (\\0) character; it usually means binary data was passed.",
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(
            f"The prompt has {len(prompt)} characters, more than the {MAX_PROMPT_CHARS} allowed.",
            reason="prompt_too_long",
            hint="Shorten the prompt; long prompts also make the model likelier to skip the tool.",
        )
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone surrogate: JSON and Python strings can carry one, codex's stdin cannot.
        code = ord(exc.object[exc.start])
        raise InputError(
            f"The prompt is not valid text: a lone surrogate (U+{code:04X}) stands at "
            f"character {exc.start}.",
            reason="invalid_prompt",
            hint="Pass the prompt as valid Unicode text (check how it was decoded).",
        ) from None
    return prompt


@dataclass(frozen=True, slots=True)
class Geometry:
    aspect: tuple[int, int] | None = None
    size: tuple[int, int] | None = None
    transparent: bool = False

    @property
    def empty(self) -> bool:
        return self.aspect is None and self.size is None and not self.transparent

    def to_dict(self) -> dict[str, object]:
        return {
            "aspect": f"{self.aspect[0]}:{self.aspect[1]}" if self.aspect else None,
            "size": f"{self.size[0]}x{self.size[1]}" if self.size else None,
            "transparent": self.transparent,
        }


def parse_aspect(text: str) -> tuple[int, int]:
    """``square``, ``landscape``, ``portrait`` or ``W:H`` -> a reduced ratio."""
    named = _NAMED_ASPECTS.get(text.strip().lower())
    if named:
        return named
    match = re.fullmatch(r"\s*(\d{1,5})\s*:\s*(\d{1,5})\s*", text)
    if not match or int(match[1]) == 0 or int(match[2]) == 0:
        raise InputError(
            f"The aspect {text!r} is not understood.",
            reason="invalid_aspect",
            hint="Use square, landscape, portrait or W:H such as 16:9.",
        )
    width, height = int(match[1]), int(match[2])
    divisor = math.gcd(width, height)
    return width // divisor, height // divisor


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` (each 16 to 8192) -> (width, height)."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*", text)
    if not match or not all(16 <= int(v) <= 8192 for v in match.groups()):
        raise InputError(
            f"The size {text!r} is not understood.",
            reason="invalid_size",
            hint="Use WxH in pixels, each between 16 and 8192, such as 1024x1536.",
        )
    return int(match[1]), int(match[2])


def compare_geometry(requested: Geometry, info: PngInfo) -> tuple[bool, list[str]]:
    """Whether the delivered aspect is off the requested one (beyond a small tolerance), and
    warnings for what differs: exact size, missing transparency."""
    warnings: list[str] = []
    target = requested.size or requested.aspect
    mismatch = False
    if target is not None:
        wanted, got = target[0] / target[1], info.width / info.height
        mismatch = abs(got / wanted - 1) > ASPECT_TOLERANCE
        if mismatch:
            asked = (
                f"size {target[0]}x{target[1]}"
                if requested.size
                else f"aspect {target[0]}:{target[1]}"
            )
            warnings.append(
                f"The image is {info.width}x{info.height}, not the requested {asked} "
                "(the backend chose the geometry)."
            )
        elif requested.size and (info.width, info.height) != requested.size:
            warnings.append(
                f"The image is {info.width}x{info.height}; the requested aspect holds but not "
                f"the exact size {requested.size[0]}x{requested.size[1]}."
            )
    if requested.transparent and not info.has_alpha:
        warnings.append("A transparent background was asked for, but the image has no alpha.")
    return mismatch, warnings


@dataclass(frozen=True, slots=True)
class Reference:
    """A checked reference image."""

    source: Path
    kind: str
    size: int
    sha256: str

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self.kind]


def reference_names(references: Sequence[Reference]) -> list[str]:
    """The plain names references get in codex's workspace (and in the instruction)."""
    return [f"ref-{n}{r.extension}" for n, r in enumerate(references, 1)]


def check_references(paths: list[str | os.PathLike[str]]) -> list[Reference]:
    """Check every reference before any work is done. Raises :class:`InputError`."""
    if len(paths) > MAX_REFERENCES:
        raise _too_many(len(paths))
    return [_check_one(Path(p)) for p in paths]


def _refuse(
    path: Path, problem: str, hint: str = "Pass PNG, JPEG, GIF or WebP images."
) -> InputError:
    return InputError(f"The reference {path} {problem}.", reason="invalid_reference", hint=hint)


def _check_one(path: Path) -> Reference:
    data = _read_reference(path)
    kind = sniff(data[:32])
    if kind not in _ACCEPTED:
        shown = "an unknown type" if kind == "unknown" else kind.upper()
        raise _refuse(path, f"is {shown}, which the image tool does not take")
    return Reference(path, kind, len(data), hashlib.sha256(data).hexdigest())


# Opened without following a link in its last part: what is checked is what codex gets.
_NOFOLLOW = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO in its place must not block the open
_LINK_ERRNOS = (errno.ELOOP, getattr(errno, "EMLINK", errno.ELOOP))  # Linux/macOS, FreeBSD


def _open_reference(path: Path) -> tuple[int, os.stat_result]:
    """A descriptor of the regular file at ``path`` (never through a link), and its stat."""
    try:
        if sys.platform == "win32" and stat.S_ISLNK(path.lstat().st_mode):  # no O_NOFOLLOW there
            raise _refuse(path, "is a symbolic link", "Pass the image file itself.")
        fd = os.open(path, _NOFOLLOW | _NONBLOCK)
    except FileNotFoundError:
        raise _refuse(path, "does not exist", "Check the path of the reference image.") from None
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS:
            raise _refuse(path, "is a symbolic link", "Pass the image file itself.") from None
        raise _refuse(path, f"cannot be read ({_why(exc)})", "Check its permissions.") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _refuse(path, "is not a regular file", "Pass an image file.")
    if info.st_size > MAX_REFERENCE_BYTES:
        os.close(fd)
        raise _refuse(
            path,
            f"has {info.st_size} bytes, more than the {MAX_REFERENCE_BYTES} allowed",
            "Pass a smaller image (at most 25 MB).",
        )
    return fd, info


def _read_reference(path: Path) -> bytes:
    fd, _ = _open_reference(path)
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read(MAX_REFERENCE_BYTES + 1)
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({_why(exc)})", "Check its permissions.") from None


def stage_reference(reference: Reference, destination: Path) -> None:
    """Copy a checked reference to ``destination`` (a new file), refusing one that changed since
    it was checked: a file swapped for a link to another file must never reach the backend.
    An OSError is the destination's (the caller's workspace)."""
    fd, _ = _open_reference(reference.source)
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as source, destination.open("xb") as copy:
        while True:
            try:
                chunk = source.read(1024 * 1024)
            except OSError as exc:
                raise _refuse(reference.source, f"cannot be read ({_why(exc)})",
                              "Check its permissions.") from None  # fmt: skip
            size += len(chunk)
            if not chunk or size > reference.size:
                break
            digest.update(chunk)
            copy.write(chunk)
    if size != reference.size or digest.hexdigest() != reference.sha256:
        raise InputError(
            f"The reference {reference.source} changed after it was checked.",
            reason="reference_changed",
            hint="Leave reference images unchanged until the image is made, then retry.",
        )


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
