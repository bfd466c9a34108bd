"""What every clustering keeps to, whatever the method: an order that depends on the embeddings
only (:func:`canonical_order`: the same faces give the same identities whatever their order, ids
or paths) and the cannot-link of faces of one image (:func:`cannot_link` cuts their links,
:func:`split_same_image` parts any that still end up together)."""

from __future__ import annotations

import numpy as np

from facepipe.stages.cluster.graph import NeighbourIndex


def canonical_order(x: np.ndarray) -> np.ndarray:
    """A permutation of the rows of ``x`` that depends on their values only (lexicographic order of
    the embeddings): clustering in this order gives the same identities whatever the order, ids or
    paths of the inputs."""
    return np.lexsort(np.asarray(x).T[::-1]) if len(x) else np.zeros(0, np.int64)


class Permuted(NeighbourIndex):
    """An index over ``x`` answering in the positions of ``x[order]``."""

    def __init__(self, index: NeighbourIndex, order: np.ndarray) -> None:
        self.index, self.order, self.backend = index, order, index.backend
        self.inverse = np.argsort(order)

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx, dist = self.index.search(self.order[rows], k)
        return np.where(idx >= 0, self.inverse[np.maximum(idx, 0)], -1), dist


def cannot_link(idx: np.ndarray, dist: np.ndarray, rows: np.ndarray, image_ids: np.ndarray | None) -> np.ndarray:
    """``dist`` with the links between two faces of one image cut (infinite): they are never one person."""
    if image_ids is None:
        return dist
    same = (idx >= 0) & (image_ids[np.maximum(idx, 0)] == image_ids[rows][:, None])
    return np.where(same, np.inf, dist)


def split_same_image(
    labels: np.ndarray, x: np.ndarray, image_ids: np.ndarray | None, movable: np.ndarray
) -> np.ndarray:
    """Where one identity holds two faces of one image, the face nearest the identity's mean stays
    (or the one that may not move) and every other becomes an identity of its own."""
    if image_ids is None:
        return labels
    out = labels.copy()
    nxt = int(out.max(initial=-1)) + 1
    key = {}
    for i in np.flatnonzero(out >= 0):
        key.setdefault((int(out[i]), image_ids[i]), []).append(i)
    for (lab, _), members in sorted(key.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if len(members) < 2:
            continue
        centre = x[out == lab].mean(0)
        keep = min(members, key=lambda i: (bool(movable[i]), float(np.linalg.norm(x[i] - centre)), i))
        for i in members:
            if i != keep and movable[i]:
                out[i], nxt = nxt, nxt + 1
    return out


def drop_small(labels: np.ndarray, min_faces: int) -> np.ndarray:
    """``labels`` with the groups of fewer than ``min_faces`` faces unassigned (-1)."""
    if min_faces <= 1:
        return labels
    ok = labels >= 0
    _, inv, counts = np.unique(labels[ok], return_inverse=True, return_counts=True)
    out = labels.copy()
    out[np.flatnonzero(ok)[counts[inv] < min_faces]] = -1
    return out
