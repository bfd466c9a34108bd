"""Clustering a kNN graph into identities. Each method: ``(idx, dist, params) -> labels`` (N,)
int64, -1 = left unassigned; labels are numbered by first appearance, so equal inputs give equal
output.

- :func:`threshold_components`: connected components of the edges shorter than ``threshold``
  (what most tools do; chains through in-between faces).
- :func:`mutual_density`: DBSCAN-like on *mutual* neighbours: an edge counts only if each end is
  among the other's k nearest and it is shorter than ``threshold``; points with at least
  ``min_core`` such edges are cores; cores connect through mutual edges, other points join their
  nearest core; groups smaller than ``min_faces`` stay unassigned. Bridges of in-between faces
  have few mutual neighbours, so they do not chain two people together.
- :func:`chinese_whispers`: dlib's label propagation on the thresholded graph (seeded order).
"""

from __future__ import annotations

import numpy as np


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _relabel(roots: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Number groups 0, 1, ... by first appearance; ``keep`` False -> -1."""
    out = np.full(len(roots), -1, np.int64)
    seen: dict[int, int] = {}
    for i, r in enumerate(roots):
        if keep is not None and not keep[i]:
            continue
        out[i] = seen.setdefault(int(r), len(seen))
    return out


def _edges(idx: np.ndarray, dist: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    src = np.repeat(np.arange(len(idx)), idx.shape[1])
    dst, d = idx.ravel(), dist.ravel()
    ok = d < threshold
    return src[ok], dst[ok]


def threshold_components(idx: np.ndarray, dist: np.ndarray, threshold: float = 0.5, min_faces: int = 1) -> np.ndarray:
    uf = UnionFind(len(idx))
    for a, b in zip(*_edges(idx, dist, threshold)):
        uf.union(int(a), int(b))
    roots = np.array([uf.find(i) for i in range(len(idx))])
    sizes = np.bincount(roots, minlength=len(idx))
    return _relabel(roots, sizes[roots] >= min_faces)


def mutual_edges(idx: np.ndarray, dist: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) pairs, a < b, with b in a's neighbours and a in b's, both shorter than threshold."""
    src, dst = _edges(idx, dist, threshold)
    fwd = set(zip(src.tolist(), dst.tolist()))
    pairs = sorted({(min(a, b), max(a, b)) for a, b in fwd if (b, a) in fwd})
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p = np.array(pairs, np.int64)
    return p[:, 0], p[:, 1]


def mutual_density(idx: np.ndarray, dist: np.ndarray, threshold: float = 0.5, min_core: int = 2, min_faces: int = 2) -> np.ndarray:
    n = len(idx)
    a, b = mutual_edges(idx, dist, threshold)
    degree = np.bincount(np.r_[a, b], minlength=n)
    core = degree >= min_core
    uf = UnionFind(n)
    for x, y in zip(a, b):
        if core[x] and core[y]:
            uf.union(int(x), int(y))
    roots = np.array([uf.find(i) for i in range(n)])
    assigned = core.copy()
    # a non-core point joins the group of its nearest core neighbour within the threshold
    for i in np.flatnonzero(~core):
        for j, d in zip(idx[i], dist[i]):
            if d >= threshold:
                break
            if core[j]:
                roots[i] = roots[j]
                assigned[i] = True
                break
    sizes = np.bincount(roots[assigned], minlength=n)
    return _relabel(roots, assigned & (sizes[roots] >= min_faces))


def chinese_whispers(idx: np.ndarray, dist: np.ndarray, threshold: float = 0.5, iterations: int = 20, seed: int = 0, min_faces: int = 1) -> np.ndarray:
    n = len(idx)
    src, dst = _edges(idx, dist, threshold)
    w = np.ones(len(src))
    nbrs: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for a, b, ww in zip(src, dst, w):
        nbrs[a].append((int(b), ww))
        nbrs[b].append((int(a), ww))
    label = np.arange(n)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for i in rng.permutation(n):
            if not nbrs[i]:
                continue
            score: dict[int, float] = {}
            for j, ww in nbrs[i]:
                score[label[j]] = score.get(label[j], 0.0) + ww
            best = max(score.items(), key=lambda kv: (kv[1], -kv[0]))[0]
            if best != label[i]:
                label[i] = best
                changed += 1
        if not changed:
            break
    sizes = np.bincount(label, minlength=n)
    return _relabel(label, sizes[label] >= min_faces)
