"""A corpus of broken and unusual image files, generated from a real photo.

Each entry: file name -> (bytes, expected status). Used by the decode unit tests and by the
end-to-end test that pushes the same files through Ray.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size: the decompression-bomb case (no pixel data needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def build(photo: Path) -> dict[str, tuple[bytes, str]]:
    """Broken/odd variants of ``photo`` (a real face photo, e.g. astronaut.png)."""
    rgb = Image.open(photo).convert("RGB")
    jpg = _save(rgb, "JPEG", quality=90)
    a16 = (np.asarray(rgb.convert("L"), np.uint16) * 257).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise
    rotated = rgb.transpose(Image.Transpose.ROTATE_90)  # what the camera stored
    rgba = rgb.convert("RGBA")
    rgba.putalpha(200)
    return {
        "truncated.jpg": (jpg[: len(jpg) // 2], "corrupt"),
        "zero_bytes.jpg": (b"", "empty"),
        "text_named.jpg": (b"hello, I am a text file\n" * 10, "not_image"),
        "bomb.png": (_png_header_only(40000, 40000), "too_large"),
        "gray16.png": (_save(Image.fromarray(a16), "PNG"), "ok"),
        "cmyk.jpg": (_save(rgb.convert("CMYK"), "JPEG", quality=95), "ok"),
        "rgba.png": (_save(rgba, "PNG"), "ok"),
        "gray.jpg": (_save(rgb.convert("L"), "JPEG", quality=95), "ok"),
        "palette.png": (_save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "ok"),
        "exif_rotated.jpg": (_save(rotated, "JPEG", quality=95, exif=exif), "ok"),
        "photo.webp": (_save(rgb, "WEBP", quality=90), "ok"),
        "photo.bmp": (_save(rgb, "BMP"), "ok"),
        "photo.tiff": (_save(rgb, "TIFF"), "ok"),
    }


def write(photo: Path, dest: Path) -> dict[str, str]:
    """Write the corpus into ``dest``; returns file name -> expected status."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (data, status) in build(photo).items():
        (dest / name).write_bytes(data)
        out[name] = status
    return out
