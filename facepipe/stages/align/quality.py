"""How much a detection looks like a face the way the aligner sees it: cheap features computed
where the chips are cut, written with every face (``faces.landmark_offsets``, ``faces.sharpness``)
and scored by the outlier stage (``facepipe.stages.score``).

- ``landmark_offsets`` (10 values): where the detector's 5 landmarks land on the aligned chip's
  template, minus where a face's landmarks sit there, in units of the template's face box. The
  chip is fitted to the shape predictor's points (``dlib_sp5``), which the predictor finds from
  the box alone: on a real face the detector and the predictor agree (offsets near 0); on a dog,
  a coin or a texture they do not. With the landmark-fitted methods the offsets are the
  similarity fit's residuals: how far the 5 points are from a face's configuration.
- ``sharpness``: log(1 + variance of the Laplacian) of the grey chip: blur and flat patches score low.
- ``detail``: log(variance of the Laplacian / variance) of the grey chip's face region: the share
  of its contrast held in the finest detail. Blur lowers it, and so does a face cut from a few
  pixels (its chip is upsampled); a faded print, whose ``sharpness`` falls with its contrast, keeps
  it. The outlier stage flags chips whose embedding this detail cannot carry
  (``facepipe.stages.score.detail``).

Measured on real detections (bench/accuracy/outlier_scores.py, bench/RESULTS.md): these with the detector's
score separate non-faces from faces better than the chip's pixels or the identity embedding.
"""

from __future__ import annotations

import cv2
import numpy as np

from facepipe.stages.align.chips import similarity_transform


def landmark_offsets(
    landmarks: np.ndarray, points: np.ndarray, template: np.ndarray, landmark_template: np.ndarray
) -> np.ndarray:
    """(N, 10) float32: the detector's ``landmarks`` (N, 5, 2, image pixels) mapped onto the
    template the chip was fitted with (``points`` (N, P, 2) image pixels <-> ``template`` (P, 2)),
    minus their places there (``landmark_template`` (5, 2))."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    n = len(lm)
    if n == 0:
        return np.zeros((0, 10), np.float32)
    pts = np.asarray(points, np.float64).reshape(n, -1, 2)
    to_image = similarity_transform(np.repeat(np.asarray(template, np.float64)[None], n, 0), pts)  # (N, 2, 3)
    a, t = to_image[:, :, :2], to_image[:, :, 2]
    on_template = np.einsum("nij,nkj->nki", np.linalg.inv(a), lm - t[:, None, :])
    return (on_template - np.asarray(landmark_template, np.float64)[None]).reshape(n, 10).astype(np.float32)


#: the part of a chip ``detail`` looks at (fractions of its side): the face, inside the padding
#: around it (dlib's chip pads the face box by a quarter of it on each side: the box spans 1/6-5/6)
DETAIL_REGION = (0.2, 0.8)


def _sharpness_and_detail(chips: np.ndarray) -> np.ndarray:
    """(N, 2) float32 :func:`sharpness` and :func:`detail` of (N, S, S, 3) uint8 RGB chips, each
    chip's grey and Laplacian computed once."""
    out = np.empty((len(chips), 2), np.float32)
    for i, c in enumerate(chips):
        a, b = (int(round(f * c.shape[0])) for f in DETAIL_REGION)
        grey = cv2.cvtColor(c, cv2.COLOR_RGB2GRAY).astype(np.float64)
        lap = cv2.Laplacian(grey, cv2.CV_64F)
        out[i] = np.log1p(lap.var()), np.log((lap[a:b, a:b].var() + 1e-3) / (grey[a:b, a:b].var() + 1.0))
    return out


def sharpness(chips: np.ndarray) -> np.ndarray:
    """(N,) float32 log(1 + variance of the Laplacian) of each (S, S, 3) uint8 RGB chip in grey."""
    return _sharpness_and_detail(chips)[:, 0]


def detail(chips: np.ndarray) -> np.ndarray:
    """(N,) float32 log(variance of the Laplacian / variance) of each (S, S, 3) uint8 RGB chip's
    grey face region (:data:`DETAIL_REGION`). A flat patch (no contrast) has no detail: about -7."""
    return _sharpness_and_detail(chips)[:, 1]


def quality_features(offsets: np.ndarray, chips: np.ndarray) -> np.ndarray:
    """(N, 12) float32: each face's landmark offsets, then its chip's sharpness and detail (the
    layout :func:`quality_columns` names)."""
    return np.concatenate([np.asarray(offsets, np.float32).reshape(-1, 10), _sharpness_and_detail(chips)], axis=1)


def quality_columns(features: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`quality_features`' matrix by name, as ``schema.FACE_VALUES`` and the faces table name them."""
    return {"landmark_offsets": features[:, :10], "sharpness": features[:, 10], "detail": features[:, 11]}
