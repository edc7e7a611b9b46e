"""``--fit WxH``: an exact-size copy of the image (cover-crop, then resize), with Pillow.

Backends ignore requested sizes, so a caller who needs exactly 1200x630 asks for a fitted copy.
It is an optional extra (``codex-cli-image[fit]``), never a default, and the original is kept:
the copy is written beside it. The crop is centred and removes only what the aspect change
requires; resizing uses Lanczos; an alpha channel is kept.
"""

from __future__ import annotations

import io
import sys

from .errors import InputError

__all__ = ["convert_png", "fit_png", "require_pillow"]


def require_pillow() -> None:
    """Raise :class:`InputError` before any work when Pillow is missing."""
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        raise InputError(
            "Fitting the image to a size needs Pillow, which is not installed.",
            reason="fit_needs_pillow",
            # This interpreter's pip, from the clone: the package is not on PyPI, and a bare
            # python3 may not be the environment we run in.
            hint=f"Install the fit extra into this environment: in your clone of "
            f"codex-cli-image, run {sys.executable} -m pip install '.[fit]' (Pillow).",
        ) from None


def crop_box(width: int, height: int, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred box of ``width`` x ``height`` with the target's aspect (pure)."""
    want_w, want_h = target
    if width * want_h > height * want_w:  # too wide: trim the sides
        new_w = max(1, round(height * want_w / want_h))
        left = (width - new_w) // 2
        return left, 0, left + new_w, height
    new_h = max(1, round(width * want_h / want_w))
    top = (height - new_h) // 2
    return 0, top, width, top + new_h


def fit_png(data: bytes, target: tuple[int, int]) -> bytes:
    """``data`` (a verified PNG) cover-cropped and resized to exactly ``target``, as PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        keep_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
        converted = image.convert("RGBA" if keep_alpha else "RGB")
    box = crop_box(converted.width, converted.height, target)
    fitted = converted.resize(target, Image.Resampling.LANCZOS, box=box)
    out = io.BytesIO()
    fitted.save(out, format="PNG")
    return out.getvalue()


def convert_png(data: bytes, output_format: str, quality: int | None) -> bytes:
    """``data`` (a verified PNG) as JPEG or WebP; JPEG has no alpha, so a transparent image
    is laid on white. ``quality``: 0-100 (OpenAI's output_compression), default 90."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        has_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
        converted = image.convert("RGBA" if has_alpha else "RGB")
    if output_format == "jpeg" and has_alpha:
        flat = Image.new("RGB", converted.size, (255, 255, 255))
        flat.paste(converted, mask=converted.getchannel("A"))
        converted = flat
    out = io.BytesIO()
    converted.save(out, format="JPEG" if output_format == "jpeg" else "WEBP",
                   quality=90 if quality is None else quality)  # fmt: skip
    return out.getvalue()
