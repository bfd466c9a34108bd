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
import math
import time
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError

from facepipe.flags import flag, non_negative_int, positive_int

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
    min_face: the smallest face width, in original pixels, that must stay detectable; ``0`` (the
        default) = off. A large photo is then decoded bigger than ``long_side``, so that a face of
        ``min_face`` pixels is still ``min_face_input`` pixels wide at the detector (never past
        full resolution). A fixed ``long_side`` shrinks a 40 px face of a 12 MP photo to 6 px,
        below any detector's smallest anchor; ``min_face=40`` reaches what dlib's HOG detector
        upsampled once reaches, at the price of detector time growing with the photo's size.
    min_face_input: the width in detector pixels such a face is given (24: above RetinaFace's
        and CenterFace's smallest anchors of 16 px, measured in bench/RESULTS.md).
    """

    max_pixels: int = flag(DEFAULT_MAX_PIXELS, "--max-pixels", "decompression-bomb guard", type=positive_int)
    long_side: int = flag(
        640, "--long-side", "detector input long side in pixels; 0 = full resolution", type=non_negative_int
    )
    upscale: bool = False
    min_face: int = flag(
        0,
        "--min-face",
        "smallest face width (original pixels) to find: large photos are detected above --long-side so such a "
        "face is 24 px at the detector (0 = off; 40 = dlib HOG's reach)",
        type=non_negative_int,
        metavar="PX",
    )
    min_face_input: int = 24

    def detector_long_side(self, width: int, height: int) -> int:
        """The long side an image of ``width`` x ``height`` is decoded at; 0 = full resolution."""
        if not self.long_side:
            return 0
        longest = max(width, height)
        side = self.long_side
        if self.min_face > 0:
            side = max(side, math.ceil(longest * min(1.0, self.min_face_input / self.min_face)))
        return 0 if side >= longest and not self.upscale else side


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
    long_side = config.detector_long_side(width, height)
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


#: Rows leaving the decode stage (declared, so all-null columns keep their types through Ray).
DECODED_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("source_uri", pa.string()),
        pa.field("width", pa.int32()),  # full-resolution, orientation-corrected; 0 on failure
        pa.field("height", pa.int32()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("pixels", pa.binary()),  # (pix_h, pix_w, 3) uint8 RGB at detector size; empty on failure
        pa.field("pix_h", pa.int32()),
        pa.field("pix_w", pa.int32()),
        pa.field("scale_x", pa.float64()),  # detector pixels = original pixels * scale
        pa.field("scale_y", pa.float64()),
        pa.field("t_decode", pa.float64()),  # seconds of decode time attributed to the row
        # the encoded bytes, kept for the full-resolution face chips after detection (null on failure)
        pa.field("data", pa.binary()),
    ]
)


def decode_batch(batch: dict[str, np.ndarray], config: DecodeConfig) -> pa.Table:
    """Decode a batch of read rows (``image_id``, ``source_uri``, ``data``, ``read_error``) into a
    DECODED_SCHEMA table, one row per input row, failures included."""
    t0 = time.perf_counter()
    rows = []
    n = len(batch["image_id"])
    read_status = batch.get("read_status", np.full(n, None, dtype=object))
    for image_id, uri, data, read_error, why in zip(
        batch["image_id"], batch["source_uri"], batch["data"], batch["read_error"], read_status
    ):
        row = {"image_id": image_id, "source_uri": uri}
        try:
            if isinstance(read_error, str):
                raise DecodeFailure(why if isinstance(why, str) else "read_error", read_error)
            d = decode_image(bytes(data) if data is not None else b"", config)
        except DecodeFailure as f:
            row.update(
                width=0,
                height=0,
                status=f.status,
                error=f.message,
                pixels=b"",
                pix_h=0,
                pix_w=0,
                scale_x=1.0,
                scale_y=1.0,
                data=None,
            )
        else:
            ph, pw = d.pixels.shape[:2]
            row.update(
                width=d.width,
                height=d.height,
                status="ok",
                error=None,
                pixels=d.pixels.tobytes(),
                pix_h=ph,
                pix_w=pw,
                scale_x=d.scale_x,
                scale_y=d.scale_y,
                data=bytes(data),
            )
        rows.append(row)
    per_row = (time.perf_counter() - t0) / max(len(rows), 1)
    for row in rows:
        row["t_decode"] = per_row
    return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)
