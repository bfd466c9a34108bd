"""Decode stage: encoded image bytes -> 8-bit RGB pixels, or a recorded failure.

Pure functions over one image (``decode_image``) and over a batch (``decode_batch``). Every
failure is returned, never raised, as a ``status`` from :data:`facepipe.schema.IMAGE_STATUSES`
plus a one-line ``error``, so a corrupt file becomes an ``images`` row instead of a dead job.

What decoding guarantees:

- EXIF orientation is applied, so ``width``/``height`` and every coordinate downstream are in the
  pixels of the image as a person sees it.
- Grayscale, palette, alpha, CMYK, 16-bit and float images all become ``(H, W, 3) uint8`` RGB.
- A pixel-count guard rejects decompression bombs from the header, before any pixel is decoded.
- JPEGs that are only needed at detector size are decoded reduced in the DCT domain (libjpeg's
  1/2, 1/4, 1/8 scaling through ``Image.draft``), which is several times faster on large photos.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default decompression-bomb guard: above every camera sold today (100-150 MP medium format),
#: below Pillow's own hard error (2 x 89.5 MP), so our message is the one users see.
DEFAULT_MAX_PIXELS = 150_000_000


@dataclass(frozen=True)
class DecodeConfig:
    """How images are decoded for detection.

    max_pixels: images with more pixels than this are rejected as ``too_large``.
    long_side: the decoded image is resized so its longer side is at most this many pixels
        (the detector's input size); ``0`` keeps full resolution.
    upscale: also enlarge images smaller than ``long_side`` (off: small images are detected at
        their native size, which keeps large faces in small images within the detector's range).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    long_side: int = 640
    upscale: bool = False


class DecodeFailure(Exception):
    """An image that cannot be decoded; ``status`` is one of ``schema.IMAGE_STATUSES``."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Decoded:
    """One decoded image.

    pixels: (h, w, 3) uint8 RGB, possibly resized.
    width, height: size of the full-resolution, orientation-corrected image.
    scale_x, scale_y: ``pixels`` coordinates = original coordinates * scale.
    """

    pixels: np.ndarray
    width: int
    height: int
    scale_x: float
    scale_y: float


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    if len(data) == 0:
        raise DecodeFailure("empty", "zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise DecodeFailure("too_large", str(e).split(".")[0]) from None
    except UnidentifiedImageError:
        raise DecodeFailure("not_image", f"not a recognised image format (first bytes {data[:8]!r})") from None
    except Exception as e:  # damaged headers raise many kinds of errors inside Pillow plugins
        raise DecodeFailure("corrupt", f"unreadable image header: {e}") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise DecodeFailure("corrupt", f"image header gives size {w}x{h}")
    if w * h > max_pixels:
        raise DecodeFailure("too_large", f"{w}x{h} = {w * h} pixels exceeds the {max_pixels}-pixel limit")
    return im


def _orientation(im: Image.Image) -> int:
    """EXIF orientation tag (1-8), read from the header only; 1 when absent or unreadable."""
    try:
        o = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not lose the image
        return 1
    return o if 1 <= o <= 8 else 1


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's convert('RGB') clips 16-bit values at 255 instead of scaling them.
        a = np.asarray(im, dtype=np.float64)
        if mode == "F" and a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        elif a.size and np.nanmax(a) > 255:
            a = a / 257.0
        g = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode != "RGB":
        im = im.convert("RGB")  # L, LA, P, PA, RGBA, CMYK (Adobe-inverted too), YCbCr, LAB, 1
    return np.asarray(im, dtype=np.uint8)


def decode_image(data: bytes, config: DecodeConfig = DecodeConfig()) -> Decoded:
    """Decode encoded bytes into RGB pixels sized for detection.

    Raises :class:`DecodeFailure` (never anything else) for input that cannot be decoded.
    """
    im = _open_checked(data, config.max_pixels)
    orientation = _orientation(im)
    width, height = (im.size[1], im.size[0]) if orientation in (5, 6, 7, 8) else im.size
    long_side = config.long_side
    try:
        if long_side and im.format == "JPEG" and max(width, height) > long_side:
            # Ask libjpeg for the smallest power-of-two reduction still >= the target size.
            s = long_side / max(width, height)
            raw_w, raw_h = im.size
            im.draft("RGB", (max(1, int(raw_w * s)), max(1, int(raw_h * s))))
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
        rgb = _to_rgb8(im)
    except DecodeFailure:
        raise
    except Exception as e:
        msg = str(e) or type(e).__name__
        raise DecodeFailure("corrupt", f"cannot decode {im.format or 'image'}: {msg}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DecodeFailure("corrupt", f"decoded to unexpected shape {rgb.shape}")

    h, w = rgb.shape[:2]
    if long_side and (max(h, w) > long_side or (config.upscale and max(h, w) < long_side)):
        s = long_side / max(width, height)
        nw, nh = max(1, round(width * s)), max(1, round(height * s))
        interp = cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    rgb = np.ascontiguousarray(rgb)
    return Decoded(rgb, width, height, rgb.shape[1] / width, rgb.shape[0] / height)


def decode_batch(batch: dict[str, np.ndarray], config: DecodeConfig) -> dict[str, np.ndarray]:
    """Decode a batch of read rows.

    In: ``image_id``, ``source_uri`` (str), ``data`` (bytes or None), ``read_error`` (str or None).
    Out: ``image_id``, ``source_uri``, ``width``, ``height`` (int32, 0 on failure), ``status``,
    ``error``, ``pixels`` (bytes of an (pix_h, pix_w, 3) uint8 array; empty on failure),
    ``pix_h``, ``pix_w`` (int32), ``scale_x``, ``scale_y`` (float64), ``t_decode`` (seconds per row).
    """
    t0 = time.perf_counter()
    n = len(batch["image_id"])
    out: dict[str, list] = {k: [] for k in ("width", "height", "status", "error", "pixels", "pix_h", "pix_w", "scale_x", "scale_y")}
    for data, read_error in zip(batch["data"], batch["read_error"]):
        try:
            if read_error is not None:
                raise DecodeFailure("read_error", str(read_error))
            d = decode_image(bytes(data) if data is not None else b"", config)
        except DecodeFailure as f:
            row = (0, 0, f.status, f.message, b"", 0, 0, 1.0, 1.0)
        else:
            ph, pw = d.pixels.shape[:2]
            row = (d.width, d.height, "ok", None, d.pixels.tobytes(), ph, pw, d.scale_x, d.scale_y)
        for k, v in zip(out, row):
            out[k].append(v)
    res = {"image_id": np.asarray(batch["image_id"], dtype=object), "source_uri": np.asarray(batch["source_uri"], dtype=object)}
    for k in ("width", "height", "pix_h", "pix_w"):
        res[k] = np.asarray(out[k], dtype=np.int32)
    for k in ("scale_x", "scale_y"):
        res[k] = np.asarray(out[k], dtype=np.float64)
    for k in ("status", "error", "pixels"):
        arr = np.empty(n, dtype=object)
        arr[:] = out[k]
        res[k] = arr
    res["t_decode"] = np.full(n, (time.perf_counter() - t0) / max(n, 1))
    return res
