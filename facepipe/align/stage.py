"""Align stage: detected faces -> chips cut the way the embedder was trained on.

``align_image`` is the pure core for one image (geometry only); ``cut_chips`` samples the regions
of a whole batch in one warp call. Methods (``AlignConfig.method``):

- ``dlib_sp5`` (default for dlib's ResNet): dlib's 5-point shape predictor, started from the
  detector's box, then dlib's chip geometry. Reproduces dlib's own pipeline (predictor ->
  ``get_face_chip`` -> descriptor) to within 0.003 descriptor distance on the test photos.
- ``dlib_landmarks``: dlib's chip geometry fitted straight to the detector's 5 landmarks (placed on
  dlib's mean face); no predictor, but further from what dlib's ResNet was trained on.
- ``arcface``: the detector's landmarks onto insightface's ArcFace template (for ArcFace models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facepipe.align.chips import (
    ARCFACE_TEMPLATE_112,
    DLIB_MEAN_FACE_DETECTOR_5,
    ChipRegion,
    dlib_chip_regions,
    sample_chips,
    template_chip_regions,
)
from facepipe.align.shape_predictor import ShapePredictor, dlib_rects
from facepipe.flags import flag
from facepipe.registry import ChipSpec

ALIGN_METHODS = ("dlib_sp5", "dlib_landmarks", "arcface")


@dataclass(frozen=True)
class AlignConfig:
    """method: one of :data:`ALIGN_METHODS`, or ``auto`` (``dlib_sp5`` for dlib chips, ``arcface``
    for ArcFace chips)."""

    method: str = flag(
        "auto",
        "--align",
        "how faces are cut for the embedder (auto: dlib_sp5 for dlib, arcface for ArcFace)",
        choices=("auto", *ALIGN_METHODS),
    )


def resolve_method(method: str, chip: ChipSpec) -> str:
    if method == "auto":
        return "dlib_sp5" if chip.method == "dlib" else "arcface"
    if method not in ALIGN_METHODS:
        raise ValueError(f"unknown align method {method!r}; known: auto, {', '.join(ALIGN_METHODS)}")
    if (method == "arcface") != (chip.method == "arcface"):
        raise ValueError(f"align method {method!r} does not make the {chip.method!r} chips this embedder needs")
    return method


def align_image(
    image: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    chip: ChipSpec,
    method: str,
    predictor: ShapePredictor | None = None,
) -> list[ChipRegion]:
    """Chip regions of the faces of one full-resolution (H, W, 3) uint8 RGB image.

    boxes (N, 4) xyxy and landmarks (N, 5, 2) in the image's pixels (the ``faces`` table's order).
    """
    if len(boxes) == 0:
        return []
    if method == "dlib_sp5":
        if predictor is None:
            raise ValueError("dlib_sp5 alignment needs the shape predictor")
        points = predictor.predict(image, dlib_rects(boxes))
        return dlib_chip_regions(image, points, chip.size, chip.padding)
    if method == "dlib_landmarks":
        return dlib_chip_regions(image, landmarks, chip.size, chip.padding, DLIB_MEAN_FACE_DETECTOR_5)
    if method == "arcface":
        return template_chip_regions(image, landmarks, ARCFACE_TEMPLATE_112, chip.size)
    raise ValueError(f"unknown align method {method!r}")


def cut_chips(regions: list[ChipRegion], chip: ChipSpec, device: str | torch.device = "cpu") -> np.ndarray:
    """All regions of a batch -> (N, S, S, 3) uint8 chips, one warp call."""
    return sample_chips(regions, chip.size, device)


def align_batch(
    images: list[np.ndarray],
    boxes: list[np.ndarray],
    landmarks: list[np.ndarray],
    chip: ChipSpec,
    method: str,
    predictor: ShapePredictor | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The chips of every face of a batch of full-resolution images, in image then face order.

    images: (H, W, 3) uint8 RGB; boxes[i] (N_i, 4) xyxy and landmarks[i] (N_i, 5, 2) in image i's
    pixels. Returns (sum N_i, S, S, 3) uint8, sampled in one warp call (on ``device``).
    """
    regions: list[ChipRegion] = []
    for image, b, lm in zip(images, boxes, landmarks):
        regions += align_image(image, b, lm, chip, method, predictor)
    return cut_chips(regions, chip, device)
