"""Prove that bytes are a complete PNG (pure): signature, IHDR first, every CRC, IEND last."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = ["MAX_IMAGE_BYTES", "PngError", "PngInfo", "inspect_png", "sniff"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 256 * 1024 * 1024
"""The largest image this tool reads (an 8K RGBA photo compresses to well under it)."""
_ALPHA_COLOR_TYPES = (4, 6)  # grey + alpha, RGB + alpha


class PngError(ValueError):
    """The bytes are not a complete, intact PNG; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class PngInfo:
    width: int
    height: int
    bit_depth: int
    color_type: int
    has_alpha: bool
    """An alpha channel, or a tRNS chunk (transparency for palette or one colour)."""
    size: int


def inspect_png(data: bytes | memoryview, *, max_bytes: int = MAX_IMAGE_BYTES) -> PngInfo:
    """Check ``data`` chunk by chunk and return what its header says. Raises :class:`PngError`."""
    view = memoryview(data)
    size = len(view)
    if size == 0:
        raise PngError("the file is empty")
    if size > max_bytes:
        raise PngError(f"the file has {size} bytes, more than the {max_bytes} allowed")
    if bytes(view[:8]) != SIGNATURE:
        kind = sniff(bytes(view[:32]))
        raise PngError(
            "no PNG signature" if kind == "unknown" else f"not a PNG ({kind.upper()} bytes)"
        )
    pos = 8
    first = True
    info: PngInfo | None = None
    has_trns = False
    while True:
        if pos + 8 > size:
            raise PngError("truncated: the data ends before IEND")
        length, kind = struct.unpack(">I4s", view[pos : pos + 8])
        end = pos + 8 + length + 4
        if end > size:
            raise PngError(f"truncated: the {kind.decode('latin-1')!r} chunk is cut short")
        crc = struct.unpack(">I", view[end - 4 : end])[0]
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise PngError(f"the {kind.decode('latin-1')!r} chunk fails its CRC check")
        if first:
            if kind != b"IHDR" or length != 13:
                raise PngError("the first chunk is not a valid IHDR")
            width, height, depth, color = struct.unpack(">IIBB", view[pos + 8 : pos + 18])
            if width == 0 or height == 0:
                raise PngError("the header gives a zero width or height")
            info = PngInfo(width, height, depth, color, color in _ALPHA_COLOR_TYPES, size)
            first = False
        elif kind == b"tRNS":
            has_trns = True
        elif kind == b"IEND":
            break
        pos = end
    assert info is not None  # the loop raises unless the first chunk set it
    if has_trns and not info.has_alpha:
        info = PngInfo(info.width, info.height, info.bit_depth, info.color_type, True, size)
    return info


def sniff(head: bytes) -> str:
    """The image type by magic bytes, from the first 32 bytes of a file ("unknown" if none)."""
    if head.startswith(SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ico"
    if head[4:8] == b"ftyp" and head[8:12] in (
        b"heic",
        b"heix",
        b"mif1",
        b"msf1",
        b"heim",
        b"hevc",
    ):
        return "heic"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "avif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.lstrip().lower().startswith((b"<svg", b"<?xml")):
        return "svg"
    return "unknown"
