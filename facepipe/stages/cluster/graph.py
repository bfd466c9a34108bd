"""k-nearest-neighbour graphs of embeddings.

:func:`build_index` puts the faces in a :class:`NeighbourIndex`; ``index.search(rows, k)`` gives
the ``(idx, dist)`` of those rows -- both (len(rows), k), neighbours by increasing Euclidean
distance, the face itself excluded, ``-1`` / ``inf`` where fewer than k were found. Backends:

- ``exact``: blocked matrix products in torch, at most ~256 MB of distances per step, O(N^2 D) time. The
  default up to ``exact_max`` faces (``exact_max_gpu`` on a GPU).
- ``ivf``: :class:`IVFIndex` -- FAISS k-means cells, each cell's faces searched together against
  the ``nprobe`` cells around it, in torch (CPU or GPU). Identities are tight, well separated
  groups, so the neighbours that matter (those under the clustering threshold) sit in the
  query's own cell or the next ones: ``bench/speed/cluster_scale.py`` measures the recall of those
  edges against the exact graph. O(N sqrt(N)) time. The default beyond ``exact_max``. Its cells
  and probes are kept in the output between nights (:mod:`facepipe.storage.ivf_store`).
- ``faiss``: FAISS ``IndexIVFFlat`` as it comes, for comparison.

``knn(x, k)`` is the whole graph in one call.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from facepipe.flags import flag

log = logging.getLogger(__name__)

BACKENDS = ("auto", "exact", "ivf", "faiss")


@dataclass(frozen=True)
class IndexConfig:
    """backend: ``auto`` = exact up to ``exact_max`` faces (``exact_max_gpu`` on a GPU), else ``ivf``. nlist: IVF
    cells (0: about 4 sqrt(N)); nprobe: cells scanned per query; train_per_cell / niter: the
    k-means sample per cell and its iterations."""

    backend: str = flag(
        "auto",
        "--knn",
        "neighbour search: exact (torch), ivf (FAISS), auto = exact on a GPU or up to 20,000 faces",
        choices=("auto", "exact", "ivf"),
    )
    exact_max: int = 20_000
    exact_max_gpu: int = 300_000
    nlist: int = 0
    nprobe: int = 16
    train_per_cell: int = 32
    niter: int = 10
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
    max_elements = 2**26

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
        step = max(1, min(self.block, self.max_elements // max(n, 1)))  # distance block of at most ~256 MB
        for s in range(0, len(rows), step):
            r = torch.from_numpy(rows[s : s + step]).to(self.x.device)
            q = self.x[r]
            dd = (self.sq[r, None] + self.sq[None, :] - 2 * q @ self.x.T).clamp_min_(0)
            vals, nn = torch.topk(dd, kk, dim=1, largest=False)
            ids[s : s + len(r), :kk] = nn.cpu().numpy()
            d2[s : s + len(r), :kk] = vals.cpu().numpy()
        return _drop_self(rows, ids, d2, k)


def _faiss():
    try:
        import faiss
    except ImportError as e:  # a runtime dependency; say what to install rather than fail deep
        raise RuntimeError("the ivf kNN backends need faiss: pip install faiss-cpu") from e
    return faiss


def _training_sample(x: np.ndarray, nlist: int, cfg: IndexConfig) -> np.ndarray:
    """``train_per_cell`` faces per cell for the k-means, drawn with the config's seed."""
    n = min(len(x), nlist * cfg.train_per_cell)
    return x if n == len(x) else x[np.sort(np.random.default_rng(cfg.seed).choice(len(x), n, replace=False))]


def _default_nlist(n: int) -> int:
    """About 4 sqrt(N) cells, a power of two (4096 for a million faces), at most N / 16: the cost
    of finding each face's cells (N * nlist) and of scanning them (N * nprobe * N / nlist) both
    grow as N sqrt(N)."""
    return int(max(1, min(2 ** round(math.log2(max(4 * math.sqrt(n), 1))), n // 16)))


def ivf_cells(n: int, cfg: IndexConfig) -> int:
    """The cells of an inverted file over ``n`` faces."""
    return max(1, min(cfg.nlist or _default_nlist(n), n))


def train_cells(x: np.ndarray, cfg: IndexConfig) -> np.ndarray:
    """The (nlist, D) centroids of FAISS k-means over a seeded sample of ``x``."""
    nlist = ivf_cells(len(x), cfg)
    km = _faiss().Kmeans(
        x.shape[1],
        nlist,
        niter=cfg.niter,
        seed=cfg.seed + 1,
        min_points_per_centroid=1,
        max_points_per_centroid=cfg.train_per_cell,
        verbose=False,
    )
    km.train(_training_sample(x, nlist, cfg))
    return np.ascontiguousarray(km.centroids, np.float32)


class IVFIndex(NeighbourIndex):
    """Inverted-file kNN, computed cell by cell: FAISS k-means cuts the faces into ``nlist``
    cells; each query probes the ``nprobe`` cells whose centroids are nearest to it -- the same
    candidates as FAISS's ``IndexIVFFlat`` -- but the work is turned around: for each cell, every
    query that probes it is compared with all of its faces in one matrix product, and each
    query's best k are merged over its cells at the end. The scan runs at BLAS speed (FAISS's own
    index scans face by face: the ``faiss`` backend, measured slower in bench/RESULTS.md).
    A neighbour is missed only when its cell is not among the query's ``nprobe`` nearest."""

    backend = "ivf"

    def __init__(
        self, x: np.ndarray, cfg: IndexConfig, device: str | torch.device | None = None, stored: tuple | None = None
    ) -> None:
        """``stored``: (centroids, probes) kept from an earlier night (``facepipe.storage.ivf_store``):
        no training, and only the faces whose probes row is -1 are assigned to cells."""
        x = np.ascontiguousarray(x, np.float32)
        n = len(x)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        cent = train_cells(x, cfg) if stored is None else stored[0]
        xt = torch.from_numpy(x).to(self.device)
        self.cent = torch.from_numpy(np.ascontiguousarray(cent, np.float32)).to(self.device)
        self.nlist, self.block = len(cent), cfg.block
        self.nprobe = min(cfg.nprobe, self.nlist)
        self.probes = torch.from_numpy(
            np.full((n, self.nprobe), -1, np.int64) if stored is None else stored[1].astype(np.int64)
        ).to(self.device)
        todo = torch.from_numpy(np.flatnonzero(self.probes[:, 0].cpu().numpy() < 0)).to(self.device)
        step = max(1, 2**26 // self.nlist)  # every face's nprobe nearest cells (its own first), in ~256 MB blocks
        for s in range(0, len(todo), step):
            self.probes[todo[s : s + step]] = self._nearest_cells(xt[todo[s : s + step]])
        self.assigned = len(todo)
        cell = self.probes[:, 0]
        self.order = torch.argsort(cell, stable=True)  # face ids, cell by cell
        self.xs = xt[self.order]  # the faces stored cell by cell: a cell is one contiguous slice
        self.sqs = (self.xs * self.xs).sum(1)
        counts = torch.bincount(cell, minlength=self.nlist)
        self.starts = (torch.cumsum(counts, 0) - counts).tolist()
        self.ends = torch.cumsum(counts, 0).tolist()
        self.x = xt

    def _nearest_cells(self, q: torch.Tensor) -> torch.Tensor:
        d2 = (q * q).sum(1, keepdim=True) + (self.cent * self.cent).sum(1)[None] - 2 * q @ self.cent.T
        return torch.topk(d2, self.nprobe, dim=1, largest=False)[1]

    def search(self, rows: np.ndarray, k: int, chunk: int = 131072) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, np.int64)
        ids = np.full((len(rows), k + 1), -1, np.int64)
        d2 = np.full((len(rows), k + 1), np.inf, np.float32)
        p = self.nprobe
        for s in range(0, len(rows), chunk):
            r = torch.from_numpy(rows[s : s + chunk]).to(self.device)
            b = len(r)
            probes = self.probes[r].reshape(-1)  # (b * p,): query i's j-th cell at i * p + j
            by_cell = torch.argsort(probes, stable=True)
            cells, per = torch.unique_consecutive(probes[by_cell], return_counts=True)
            best_i = torch.full((b * p, k + 1), -1, dtype=torch.int64, device=self.device)
            best_d = torch.full((b * p, k + 1), float("inf"), device=self.device)
            at = 0
            for c, m in zip(cells.tolist(), per.tolist()):
                slots = by_cell[at : at + m]
                at += m
                lo, hi = self.starts[c], self.ends[c]
                if hi == lo:
                    continue
                xc, sqc = self.xs[lo:hi], self.sqs[lo:hi]
                kk = min(k + 1, hi - lo)
                for t in range(0, m, self.block):
                    sl = slots[t : t + self.block]
                    q = self.x[r[sl // p]]
                    dd = ((q * q).sum(1, keepdim=True) + sqc[None] - 2 * q @ xc.T).clamp_min_(0)
                    vals, nn = torch.topk(dd, kk, dim=1, largest=False)
                    best_i[sl, :kk] = self.order[lo + nn]
                    best_d[sl, :kk] = vals
            vals, pick = torch.topk(best_d.reshape(b, -1), min(k + 1, p * (k + 1)), dim=1, largest=False)
            ids[s : s + b] = torch.gather(best_i.reshape(b, -1), 1, pick).cpu().numpy()[:, : k + 1]
            d2[s : s + b] = vals.cpu().numpy()[:, : k + 1]
        return _drop_self(rows, ids, d2, k)


class FaissIVFIndex(NeighbourIndex):
    """FAISS ``IndexIVFFlat`` as it comes (face-by-face scanning); kept for comparison."""

    backend = "faiss"

    def __init__(self, x: np.ndarray, cfg: IndexConfig) -> None:
        faiss = _faiss()
        x = np.ascontiguousarray(x, np.float32)
        n, d = x.shape
        nlist = ivf_cells(n, cfg)
        self.quantizer = faiss.IndexFlatL2(d)
        self.index = faiss.IndexIVFFlat(self.quantizer, d, nlist, faiss.METRIC_L2)
        self.index.cp.seed = cfg.seed + 1
        self.index.cp.niter = cfg.niter
        self.index.cp.min_points_per_centroid = 1
        self.index.train(_training_sample(x, nlist, cfg))
        self.index.add(x)
        self.index.nprobe = min(cfg.nprobe, nlist)
        self.x, self.nlist, self.nprobe = x, nlist, self.index.nprobe

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, np.int64)
        d2, ids = self.index.search(self.x[rows], k + 1)
        return _drop_self(rows, ids, d2, k)


def chosen_backend(n: int, cfg: IndexConfig, device: str | torch.device | None = None) -> str:
    """The backend ``build_index`` uses for ``n`` faces."""
    if cfg.backend != "auto":
        return cfg.backend
    on_gpu = (device is None and torch.cuda.is_available()) or (
        device is not None and torch.device(device).type == "cuda"
    )
    return "exact" if n <= (cfg.exact_max_gpu if on_gpu else cfg.exact_max) else "ivf"


def build_index(
    x: np.ndarray,
    cfg: IndexConfig = IndexConfig(),
    device: str | torch.device | None = None,
    stored: tuple[np.ndarray, np.ndarray] | None = None,
) -> NeighbourIndex:
    """The index ``cfg`` asks for; ``stored``: the ivf backend's cells kept from an earlier night."""
    backend = chosen_backend(len(x), cfg, device)
    if backend == "exact":
        return ExactIndex(x, cfg.block, device)
    if backend == "faiss":
        return FaissIVFIndex(x, cfg)
    return IVFIndex(x, cfg, device, stored)


def knn(
    x: np.ndarray, k: int, block: int = 2048, device: str | torch.device | None = "cpu", cfg: IndexConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row of ``x`` (N, D) among the others (exact unless
    ``cfg`` says otherwise)."""
    n = len(x)
    k = min(k, max(n - 1, 0))
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    index = build_index(x, cfg or IndexConfig(backend="exact", block=block), device)
    return index.search(np.arange(n), k)
