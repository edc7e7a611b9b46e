"""Small independent checks for tests (deliberately not the package's own code)."""

from __future__ import annotations

import zlib


def png_ok(data: bytes) -> bool:
    """A small independent PNG check: signature, chunk CRCs, IHDR first, IEND last."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    pos, kinds = 8, []
    while pos < len(data):
        if pos + 12 > len(data):
            return False
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(body) != length or int.from_bytes(crc, "big") != zlib.crc32(kind + body):
            return False
        kinds.append(kind)
        pos += 12 + length
    return bool(kinds) and kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
