"""dlib's 5-point face shape predictor (``shape_predictor_5_face_landmarks.dat``) in numpy.

An ensemble of regression trees (Kazemi & Sullivan, CVPR 2014): 15 cascade levels of 500 depth-4
trees each. Starting from a mean shape placed in the face box, each level samples 800 pixel
intensities at positions anchored to the current shape, and every tree adds its leaf's shape
update, chosen by comparing differences of two sampled intensities against thresholds.

This port reads dlib's file directly (:func:`read_shape_predictor`) and reproduces dlib's
arithmetic: shapes in float32 in box-normalised coordinates, the similarity transform between
the mean and the current shape (Umeyama, 2x2 part only), sample positions rounded to the nearest
pixel, pixels outside the image read as 0, and intensity = (R + G + B) // 3. Output points are
rounded to whole pixels, as dlib's ``full_object_detection`` holds integer points.

Vectorised over faces: one call handles every face of an image.

The 5 points (dlib's order): outer and inner corner of the eye on the image's right, outer and
inner corner of the eye on the image's left, base of the nose.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from torch import nn

from facepipe.dlib_format import DlibReader
from facepipe.registry import ModelSpec, WeightSource, register_model
from facepipe.stages.align.chips import similarity_transform


@dataclass(frozen=True)
class ShapePredictorModel:
    initial_shape: np.ndarray  # (P, 2) float32, box-normalised
    split_idx: np.ndarray  # (L, T, S, 2) int64 feature indices of each split
    split_thresh: np.ndarray  # (L, T, S) float32
    leaves: np.ndarray  # (L, T, S + 1, P, 2) float32 shape updates
    anchor_idx: np.ndarray  # (L, F) int64 shape point each feature is anchored to
    deltas: np.ndarray  # (L, F, 2) float32 offsets from the anchor, in mean-shape coordinates


def read_shape_predictor(path: str | Path) -> ShapePredictorModel:
    """Parse dlib's ``shape_predictor`` serialization (version 1)."""
    r = DlibReader.open(path)
    if (v := r.int()) != 1:
        raise r.error(f"unsupported shape_predictor version {v}")
    init = r.float_matrix().reshape(-1, 2)
    n_levels = r.int()
    idx, thr, leaves = [], [], []
    for _ in range(n_levels):
        n_trees = r.int()
        for _ in range(n_trees):
            n_splits = r.int()
            raw = r.ints(4 * n_splits).reshape(n_splits, 4)  # idx1, idx2, thresh mantissa, exponent
            idx.append(raw[:, :2])
            thr.append(np.ldexp(raw[:, 2].astype(np.float64), raw[:, 3]))
            n_leaves = r.int()
            if n_leaves != n_splits + 1:
                raise r.error(f"tree with {n_splits} splits has {n_leaves} leaves")
            npts = init.size
            lv = r.ints(n_leaves * (2 + 2 * npts)).reshape(n_leaves, 2 + 2 * npts)
            if not (lv[:, 0] == -npts).all() or not (lv[:, 1] == -1).all():
                raise r.error("leaf values are not column vectors of the shape's size")
            leaves.append(np.ldexp(lv[:, 2::2].astype(np.float64), lv[:, 3::2]).reshape(n_leaves, -1, 2))
    n_anchor = r.int()
    anchors = [r.ints(r.int()) for _ in range(n_anchor)]
    n_delta = r.int()
    deltas = [r.floats(2 * r.int()).reshape(-1, 2) for _ in range(n_delta)]
    if not r.at_end:
        raise r.error("trailing bytes after the shape predictor")
    L = n_levels
    T = len(idx) // L
    return ShapePredictorModel(
        initial_shape=init.astype(np.float32),
        split_idx=np.stack(idx).reshape(L, T, -1, 2),
        split_thresh=np.stack(thr).reshape(L, T, -1).astype(np.float32),
        leaves=np.stack(leaves).reshape(L, T, -1, init.shape[0], 2).astype(np.float32),
        anchor_idx=np.stack(anchors),
        deltas=np.stack(deltas).astype(np.float32),
    )


def dlib_rects(boxes: np.ndarray) -> np.ndarray:
    """Float xyxy boxes (N, 4) -> dlib rectangles (N, 4) int64 (left, top, right, bottom), inclusive
    corners: right = round(x2) - 1, as dlib counts a w-pixel-wide box from left to left + w - 1."""
    b = np.round(np.asarray(boxes, np.float64)).astype(np.int64)
    return np.stack([b[:, 0], b[:, 1], np.maximum(b[:, 2] - 1, b[:, 0]), np.maximum(b[:, 3] - 1, b[:, 1])], 1)


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.int64)


class ShapePredictor(nn.Module):
    """Callable predictor (an ``nn.Module`` only so the registry can build it like any model)."""

    def __init__(self, model: ShapePredictorModel) -> None:
        super().__init__()
        self.m = model

    @property
    def n_points(self) -> int:
        return self.m.initial_shape.shape[0]

    def predict(self, image: np.ndarray, rects: np.ndarray) -> np.ndarray:
        """Landmarks of the faces in dlib rectangles ``rects`` (N, 4) of one (H, W, 3) uint8 RGB
        image: (N, P, 2) float32 whole-pixel (x, y), in dlib's point order."""
        rects = np.asarray(rects, np.int64).reshape(-1, 4)
        n = len(rects)
        m = self.m
        if n == 0:
            return np.zeros((0, self.n_points, 2), np.float32)
        h, w = image.shape[:2]
        # box-normalised [0, 1]^2 -> pixels: tl = (left, top), br = (right, bottom)
        origin = rects[:, None, :2].astype(np.float64)
        extent = (rects[:, 2:] - rects[:, :2]).astype(np.float64)[:, None, :]
        shape = np.repeat(m.initial_shape[None], n, 0)  # (N, P, 2) float32
        init = np.repeat(m.initial_shape[None], n, 0)
        n_trees, n_splits = m.split_thresh.shape[1:]
        depth = int(np.log2(n_splits + 1))
        if 2**depth != n_splits + 1:
            raise ValueError(f"regression trees with {n_splits} splits are not complete binary trees")
        split_base = np.arange(n_trees) * n_splits
        leaf_base = np.arange(n_trees) * (n_splits + 1)
        for level in range(m.split_idx.shape[0]):
            # mean shape -> current shape, 2x2 part only, computed in float64 then float32 like dlib
            A = similarity_transform(init, shape)[:, :, :2].astype(np.float32)  # (N, 2, 2)
            anchor = shape[:, m.anchor_idx[level]]  # (N, F, 2)
            pts = np.matmul(m.deltas[level][None], A.transpose(0, 2, 1)) + anchor  # float32, as dlib
            px = _round_half_up(origin + pts.astype(np.float64) * extent)
            inside = (px[..., 0] >= 0) & (px[..., 0] < w) & (px[..., 1] >= 0) & (px[..., 1] < h)
            # intensity (R + G + B) // 3 of the sampled pixels only (not of the whole image)
            rgb = image[px[..., 1].clip(0, h - 1), px[..., 0].clip(0, w - 1)].astype(np.int32)
            feats = np.where(inside, rgb.sum(-1) // 3, 0).astype(np.float32)
            # all trees of the level for all faces at once; trees are complete, so every face
            # reaches a leaf after `depth` splits: left (2i + 1) when f[idx1] - f[idx2] > thresh
            idx = m.split_idx[level].reshape(-1, 2)
            thr = m.split_thresh[level].reshape(-1)
            node = np.zeros((n, n_trees), np.int64)
            for _ in range(depth):
                flat = split_base + node
                diff = np.take_along_axis(feats, idx[flat, 0], 1) - np.take_along_axis(feats, idx[flat, 1], 1)
                node = 2 * node + 1 + (diff <= thr[flat])
            upd = m.leaves[level].reshape(-1, *m.leaves.shape[3:])[leaf_base + node - n_splits]  # (N, T, P, 2)
            # dlib adds tree by tree to the shape in float32; a float32 cumulative sum keeps that order
            shape = np.cumsum(np.concatenate([shape[:, None], upd], 1), axis=1, dtype=np.float32)[:, -1]
        return _round_half_up(origin + shape.astype(np.float64) * extent).astype(np.float32)


def load_shape_predictor(path: str | Path, cache: Path | None = None) -> ShapePredictorModel:
    """:func:`read_shape_predictor` through a cache of the parsed arrays (``.npz`` keyed by the
    file's sha256): parsing dlib's format in Python takes seconds, loading the arrays milliseconds."""
    from facepipe.model_files import cache_dir, sha256_file

    root = cache or cache_dir("models")
    cached = root / f"shape_predictor-{sha256_file(Path(path))[:16]}.npz"
    try:
        with np.load(cached) as z:
            return ShapePredictorModel(**{f.name: z[f.name] for f in fields(ShapePredictorModel)})
    except (OSError, KeyError, ValueError):
        pass
    model = read_shape_predictor(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **{f.name: getattr(model, f.name) for f in fields(ShapePredictorModel)})
        tmp.replace(cached)
    except OSError:  # a read-only home is fine: parse again next time
        pass
    return model


def build_shape_predictor(weights: Path) -> ShapePredictor:
    return ShapePredictor(load_shape_predictor(weights))


SHAPE_PREDICTOR_5 = register_model(
    ModelSpec(
        name="dlib_shape_predictor_5",
        kind="landmarks",
        build=build_shape_predictor,
        weights=WeightSource(
            package="face_recognition_models",
            filename="models/shape_predictor_5_face_landmarks.dat",
            sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            license="CC0 (dlib model by Davis King; PyPI face-recognition-models 0.3.0)",
        ),
        description="dlib's 5-point regression-tree landmarker: eye corners and nose base, for dlib chips",
    )
)
