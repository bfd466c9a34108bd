"""k-nearest-neighbour graphs of embeddings.

:func:`build_index` puts the faces in a :class:`NeighbourIndex`; ``index.search(rows, k)`` gives
the ``(idx, dist)`` of those rows -- both (len(rows), k), neighbours by increasing Euclidean
distance, the face itself excluded, ``-1`` / ``inf`` where fewer than k were found. Two backends:

- ``exact``: blocked matrix products in torch, O(block * N) memory per step, O(N^2 D) time. The
  default on a GPU (a million faces is seconds there) and for small N on a CPU.
- ``ivf``: FAISS ``IndexIVFFlat`` -- k-means cells (about 4 sqrt(N)), each query scans the
  ``nprobe`` nearest cells exactly. Identities are tight, well separated groups, so the
  neighbours that matter (those under the clustering threshold) sit in the query's own cell or
  the next ones: ``bench/cluster_scale.py`` measures the recall of those edges against the exact
  graph. The default on a CPU beyond ``exact_max`` faces.

``knn(x, k)`` is the whole graph in one call.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "exact", "ivf")


@dataclass(frozen=True)
class IndexConfig:
    """backend: ``auto`` = exact on a GPU or up to ``exact_max`` faces, else ``ivf``. nlist: IVF
    cells (0: about 4 sqrt(N), a power of two); nprobe: cells scanned per query; train_per_cell:
    training sample per cell for the k-means."""

    backend: str = "auto"
    exact_max: int = 20_000
    nlist: int = 0
    nprobe: int = 16
    train_per_cell: int = 64
    block: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"kNN backend {self.backend!r} is not one of {BACKENDS}")


class NeighbourIndex:
    """The faces of one clustering run; ``search`` finds neighbours of some of them."""

    backend: str

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def _drop_self(rows: np.ndarray, ids: np.ndarray, d2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(len(rows), k+1) results -> (len(rows), k) without the query itself (or the farthest one
    when the query was not returned, e.g. an exact duplicate took its place)."""
    is_self = ids == rows[:, None]
    drop = np.where(is_self.any(1), is_self.argmax(1), ids.shape[1] - 1)
    keep = np.ones_like(is_self)
    keep[np.arange(len(rows)), drop] = False
    ids = ids[keep].reshape(len(rows), -1)[:, :k]
    d2 = d2[keep].reshape(len(rows), -1)[:, :k]
    dist = np.sqrt(np.maximum(d2, 0)).astype(np.float32)
    dist[ids < 0] = np.inf
    return ids.astype(np.int64), dist


class ExactIndex(NeighbourIndex):
    backend = "exact"

    def __init__(self, x: np.ndarray, block: int = 2048, device: str | torch.device | None = None) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.x = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)
        self.sq = (self.x * self.x).sum(1)
        self.block = block

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.x)
        rows = np.asarray(rows, np.int64)
        kk = min(k + 1, n)
        ids = np.full((len(rows), k + 1), -1, np.int64)
        d2 = np.full((len(rows), k + 1), np.inf, np.float32)
        for s in range(0, len(rows), self.block):
            r = torch.from_numpy(rows[s : s + self.block]).to(self.x.device)
            q = self.x[r]
            dd = (self.sq[r, None] + self.sq[None, :] - 2 * q @ self.x.T).clamp_min_(0)
            vals, nn = torch.topk(dd, kk, dim=1, largest=False)
            ids[s : s + len(r), :kk] = nn.cpu().numpy()
            d2[s : s + len(r), :kk] = vals.cpu().numpy()
        return _drop_self(rows, ids, d2, k)


class IVFIndex(NeighbourIndex):
    backend = "ivf"

    def __init__(self, x: np.ndarray, cfg: IndexConfig) -> None:
        try:
            import faiss
        except ImportError as e:  # a runtime dependency; say what to install rather than fail deep
            raise RuntimeError("the ivf kNN backend needs faiss: pip install faiss-cpu") from e
        x = np.ascontiguousarray(x, np.float32)
        n, d = x.shape
        nlist = cfg.nlist or max(1, 2 ** round(math.log2(max(4 * math.sqrt(n), 1))))
        nlist = min(nlist, max(1, n // 8))
        self.quantizer = faiss.IndexFlatL2(d)
        self.index = faiss.IndexIVFFlat(self.quantizer, d, nlist, faiss.METRIC_L2)
        self.index.cp.seed = cfg.seed
        ntrain = min(n, nlist * cfg.train_per_cell)
        sample = x if ntrain == n else x[np.sort(np.random.default_rng(cfg.seed).choice(n, ntrain, replace=False))]
        self.index.train(sample)
        self.index.add(x)
        self.index.nprobe = min(cfg.nprobe, nlist)
        self.x = x
        self.nlist = nlist

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, np.int64)
        d2, ids = self.index.search(self.x[rows], k + 1)
        return _drop_self(rows, ids, d2, k)


def build_index(x: np.ndarray, cfg: IndexConfig = IndexConfig(), device: str | torch.device | None = None) -> NeighbourIndex:
    backend = cfg.backend
    if backend == "auto":
        on_gpu = (device is None and torch.cuda.is_available()) or (device is not None and torch.device(device).type == "cuda")
        backend = "exact" if on_gpu or len(x) <= cfg.exact_max else "ivf"
    if backend == "exact":
        return ExactIndex(x, cfg.block, device)
    return IVFIndex(x, cfg)


def knn(x: np.ndarray, k: int, block: int = 2048, device: str | torch.device | None = "cpu", cfg: IndexConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row of ``x`` (N, D) among the others (exact unless
    ``cfg`` says otherwise)."""
    n = len(x)
    k = min(k, max(n - 1, 0))
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    index = build_index(x, cfg or IndexConfig(backend="exact", block=block), device)
    return index.search(np.arange(n), k)
