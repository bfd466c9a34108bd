"""The inverted-file neighbour indexes (the ``ivf`` and ``faiss`` backends of
:func:`facepipe.stages.cluster.graph.build_index`; the module text there compares them)."""

from __future__ import annotations

import math

import numpy as np
import torch

from facepipe.stages.cluster.arrays import CHUNK
from facepipe.stages.cluster.graph import IndexConfig, NeighbourIndex, _drop_self


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


def by_cells(probes: torch.Tensor):
    """Flat query-probe slots grouped by cell: (the slots in cell order, (cell, first, count) per
    cell). The cell-by-cell scans -- this module's and :mod:`facepipe.tools.batch_scan` -- walk these."""
    by_cell = torch.argsort(probes, stable=True)
    cells, per = torch.unique_consecutive(probes[by_cell], return_counts=True)
    at = torch.cumsum(per, 0) - per
    return by_cell, zip(cells.tolist(), at.tolist(), per.tolist())


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(1)


class CellLayout:
    """Faces laid out cell by cell, scanned against queries that probe their cells: a whole
    index's faces, or one shard's (:mod:`facepipe.stages.cluster.shards`). ``x`` (M, D) is not
    copied: a cell's rows are gathered when it is scanned, once per chunk of queries (a copy was
    half a gigabyte at 10^6 faces). ``names`` (M,): what a face is called in the answers (default:
    its row of ``x``)."""

    def __init__(
        self, x: torch.Tensor, cells: torch.Tensor, nlist: int, block: int, names: torch.Tensor | None = None
    ) -> None:
        self.x, self.block, self.names = x, block, names
        self.order = torch.argsort(cells, stable=True)  # rows of x, cell by cell: a cell is one slice
        # each face's |x|^2 in row order (a pass over x), then laid out: no gather of every row
        self.sqs = torch.cat([_squared_norms(c) for c in x.split(CHUNK)])[self.order] if len(x) else x[:0, 0]
        counts = torch.bincount(cells.long(), minlength=nlist)
        self.starts = (torch.cumsum(counts, 0) - counts).tolist()
        self.ends = torch.cumsum(counts, 0).tolist()

    def _blocks(self, q: torch.Tensor, probes: torch.Tensor):
        """(slots, names of the cell's faces, squared distances) for every block of queries
        against a cell; query i's j-th probe is slot i * p + j. Cells outside the layout are empty."""
        p = probes.shape[1]
        by_cell, groups = by_cells(probes.reshape(-1))
        qn, q2 = _squared_norms(q)[:, None], q * -2  # -2 q . x is (-2 q) . x exactly: one temporary less
        for c, at, m in groups:
            lo, hi = self.starts[c], self.ends[c]
            if hi == lo:
                continue
            rows = self.order[lo:hi]
            xc, sqc = self.x[rows], self.sqs[lo:hi]
            names = rows if self.names is None else self.names[rows]
            for t in range(at, at + m, self.block):
                sl = by_cell[t : min(t + self.block, at + m)]
                d2 = q2[sl // p] @ xc.T
                yield sl, names, d2.add_(qn[sl // p] + sqc[None]).clamp_min_(0)  # (|q|^2 + |x|^2) - 2 q.x

    def best(self, q: torch.Tensor, probes: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each (query, probe) slot's k + 1 nearest faces of that cell: (b * p, k + 1) names and
        squared distances, -1 / inf where the cell holds fewer (or lies outside the layout)."""
        best_i = torch.full((probes.numel(), k + 1), -1, dtype=torch.int64, device=q.device)
        best_d = torch.full((probes.numel(), k + 1), float("inf"), device=q.device)
        for sl, names, dd in self._blocks(q, probes):
            kk = min(k + 1, dd.shape[1])
            vals, nn = torch.topk(dd, kk, dim=1, largest=False)
            best_i[sl, :kk] = names[nn]
            best_d[sl, :kk] = vals
        return best_i, best_d

    def within(
        self, q: torch.Tensor, probes: torch.Tensor, r2: float, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query, name, squared distance) of the faces under ``r2`` of each query in its cells: a
        comparison instead of a top-k per cell (a cell crowded under the radius -- copies of one
        face -- gives each query its k + 1 nearest of it, so memory stays that of :meth:`best`)."""
        p = probes.shape[1]
        qs, fs, ds = [], [], []
        for sl, names, dd in self._blocks(q, probes):
            under = dd < r2
            if int(under.sum()) > (k + 1) * len(sl):  # a crowded cell: each query's k + 1 nearest of it
                vals, nn = torch.topk(dd, min(k + 1, dd.shape[1]), dim=1, largest=False)
                i, at = torch.nonzero(vals < r2, as_tuple=True)
                j = nn[i, at]
            else:
                i, j = torch.nonzero(under, as_tuple=True)
            qs.append(sl[i] // p)
            fs.append(names[j])
            ds.append(dd[i, j])
        if not qs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return tuple(torch.cat(v).cpu().numpy() for v in (qs, fs, ds))


def nearest_of_cells(best_i: torch.Tensor, best_d: torch.Tensor, b: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CellLayout.best` of b queries -> each query's k + 1 nearest over its cells."""
    p = len(best_i) // max(b, 1)
    vals, pick = torch.topk(best_d.reshape(b, -1), min(k + 1, p * (k + 1)), dim=1, largest=False)
    return torch.gather(best_i.reshape(b, -1), 1, pick).cpu().numpy()[:, : k + 1], vals.cpu().numpy()[:, : k + 1]


def nearest_within(q: np.ndarray, f: np.ndarray, d: np.ndarray, b: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CellLayout.within` of b queries -> each query's k + 1 nearest of them (ties: by name),
    -1 / inf after the last."""
    ids = np.full((b, k + 1), -1, np.int64)
    d2 = np.full((b, k + 1), np.inf, np.float32)
    o = np.lexsort((f, d, q))  # by query, then distance (ties: by face)
    q, f, d = q[o], f[o], d[o]
    rank = np.arange(len(q)) - np.searchsorted(q, q)  # place within its query
    keep = rank <= k
    ids[q[keep], rank[keep]], d2[q[keep], rank[keep]] = f[keep], d[keep]
    return ids, d2


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
        self.probes = torch.from_numpy(  # int32: 64 bytes a face at nprobe 16, not 128
            np.full((n, self.nprobe), -1, np.int32) if stored is None else stored[1].astype(np.int32)
        ).to(self.device)
        todo = torch.from_numpy(np.flatnonzero(self.probes[:, 0].cpu().numpy() < 0)).to(self.device)
        step = max(1, 2**26 // self.nlist)  # every face's nprobe nearest cells (its own first), in ~256 MB blocks
        for s in range(0, len(todo), step):
            self.probes[todo[s : s + step]] = self._nearest_cells(xt[todo[s : s + step]]).to(self.probes.dtype)
        self.assigned = len(todo)
        #: None: the k nearest; a distance: only the neighbours under it (see :meth:`scan`)
        self.radius: float | None = None
        self.x = xt
        self.cells = CellLayout(xt, self.probes[:, 0], self.nlist, self.block)

    def _nearest_cells(self, q: torch.Tensor) -> torch.Tensor:
        d2 = (q * -2) @ self.cent.T  # as in CellLayout._blocks: the same distances, fewer temporaries
        d2.add_(_squared_norms(q)[:, None] + _squared_norms(self.cent)[None])
        return torch.topk(d2, self.nprobe, dim=1, largest=False)[1]

    def search(self, rows: np.ndarray, k: int, chunk: int = 131072, scan=None) -> tuple[np.ndarray, np.ndarray]:
        """``scan``: what compares a chunk of queries with the faces of their cells (default
        :meth:`scan`; a sharded index's sends them to its shards)."""
        rows, scan = np.asarray(rows, np.int64), scan or self.scan
        ids = np.full((len(rows), k + 1), -1, np.int64)
        d2 = np.full((len(rows), k + 1), np.inf, np.float32)
        chunk = chunk if self.radius is None else chunk // 2  # ~45 faces under the radius per query at 10^6
        order = self.search_order(rows)
        for s in range(0, len(rows), chunk):
            at = order[s : s + chunk]
            r = torch.from_numpy(rows[at]).to(self.device)
            ids[at], d2[at] = scan(self.x[r], self.probes[r], k)
        return _drop_self(rows, ids, d2, k)

    def search_order(self, rows: np.ndarray) -> np.ndarray:
        """Queries by their own cell: a chunk of them then probes a few hundred cells, not all of
        them -- each cell's faces gathered once a chunk and compared with many queries at once
        (at 10^7 faces, queries in face order made each chunk gather every cell: a fifth of the scan)."""
        own = self.probes[torch.from_numpy(np.asarray(rows, np.int64)).to(self.device), 0]
        return np.argsort(own.cpu().numpy(), kind="stable")

    def scan(self, q: torch.Tensor, probes: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's k + 1 nearest over its cells (``probes``); with :attr:`radius`, only
        those under it (the rest are never linked): a comparison per cell, not a top-k."""
        if self.radius is None:
            return nearest_of_cells(*self.cells.best(q, probes, k), len(q), k)
        return nearest_within(*self.cells.within(q, probes, self.radius**2, k), len(q), k)


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
