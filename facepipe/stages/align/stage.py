"""Align stage: detected faces -> chips cut the way the embedder was trained on.

``fit_points`` finds what one image's chips are fitted to and ``chip_regions`` where they are
sampled (``align_image`` does both); ``cut_chips`` samples the regions of a whole batch in one warp
call; ``align_batch`` does a batch, with each face's quality features (``facepipe.stages.align.quality``).
Methods (``AlignConfig.method``):

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

from facepipe.flags import flag
from facepipe.registry import ChipSpec
from facepipe.stages.align.chips import (
    ARCFACE_TEMPLATE_112,
    DLIB_MEAN_FACE_5,
    DLIB_MEAN_FACE_DETECTOR_5,
    ChipRegion,
    dlib_chip_regions,
    sample_chips,
    template_chip_regions,
)
from facepipe.stages.align.quality import landmark_offsets, quality_features
from facepipe.stages.align.shape_predictor import ShapePredictor, dlib_rects

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


@dataclass(frozen=True)
class Fit:
    """What one image's chips are fitted to: ``points`` (N, P, 2) in image pixels, their places
    on the chip's template ``template`` (P, 2, in [0, 1] of the template's face box), and where the
    detector's 5 landmarks sit on that template (``landmark_template``, (5, 2)).
    ``facepipe.stages.align.quality`` measures how far the detector's landmarks are from those places."""

    points: np.ndarray
    template: np.ndarray
    landmark_template: np.ndarray


def fit_points(
    image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, method: str, predictor: ShapePredictor | None = None
) -> Fit:
    """The points each face's chip is fitted to, by ``method`` (the shape predictor's 5 points
    started from the box, or the detector's own landmarks)."""
    if method == "dlib_sp5":
        if predictor is None:
            raise ValueError("dlib_sp5 alignment needs the shape predictor")
        points = predictor.predict(image, dlib_rects(boxes)) if len(boxes) else np.zeros((0, 5, 2), np.float32)
        return Fit(points, DLIB_MEAN_FACE_5, DLIB_MEAN_FACE_DETECTOR_5)
    if method == "dlib_landmarks":
        return Fit(landmarks, DLIB_MEAN_FACE_DETECTOR_5, DLIB_MEAN_FACE_DETECTOR_5)
    if method == "arcface":
        return Fit(landmarks, ARCFACE_TEMPLATE_112 / 112.0, ARCFACE_TEMPLATE_112 / 112.0)
    raise ValueError(f"unknown align method {method!r}")


def chip_regions(image: np.ndarray, fit: Fit, chip: ChipSpec, method: str) -> list[ChipRegion]:
    """Chip regions of the faces of one full-resolution image, from their :class:`Fit`."""
    if not len(fit.points):
        return []
    if method == "arcface":
        return template_chip_regions(image, fit.points, ARCFACE_TEMPLATE_112, chip.size)
    return dlib_chip_regions(image, fit.points, chip.size, chip.padding, fit.template)


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
    return chip_regions(image, fit_points(image, boxes, landmarks, method, predictor), chip, method)


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
) -> tuple[np.ndarray, np.ndarray]:
    """The chips of every face of a batch of full-resolution images, in image then face order,
    and each face's quality features (``facepipe.stages.align.quality``).

    images: (H, W, 3) uint8 RGB; boxes[i] (N_i, 4) xyxy and landmarks[i] (N_i, 5, 2) in image i's
    pixels. Returns chips (sum N_i, S, S, 3) uint8, sampled in one warp call (on ``device``), and
    quality (sum N_i, 12) float32.
    """
    regions: list[ChipRegion] = []
    offsets = []
    for image, b, lm in zip(images, boxes, landmarks):
        if len(b):
            fit = fit_points(image, b, lm, method, predictor)
            regions += chip_regions(image, fit, chip, method)
            offsets.append(landmark_offsets(lm, fit.points, fit.template, fit.landmark_template))
    chips = cut_chips(regions, chip, device)
    offsets_all = np.concatenate(offsets) if offsets else np.zeros((0, 10), np.float32)
    return chips, quality_features(offsets_all, chips)
