"""k-nearest-neighbour graphs of embeddings.

:func:`build_index` puts the faces in a :class:`NeighbourIndex`; ``index.search(rows, k)`` gives
the ``(idx, dist)`` of those rows -- both (len(rows), k), neighbours by increasing Euclidean
distance, the face itself excluded, ``-1`` / ``inf`` where fewer than k were found. Backends:

- ``exact``: blocked matrix products in torch, at most ~256 MB of distances per step, O(N^2 D) time. The
  default up to ``exact_max`` faces (``exact_max_gpu`` on a GPU).
- ``ivf``: :class:`facepipe.stages.cluster.ivf.IVFIndex` -- FAISS k-means cells, each cell's
  faces searched together against the ``nprobe`` cells around it, in torch (CPU or GPU).
  Identities are tight, well separated groups, so the neighbours that matter (those under the
  clustering threshold) sit in the query's own cell or the next ones:
  ``bench/speed/cluster_scale.py`` measures the recall of those edges against the exact graph.
  O(N sqrt(N)) time. The default beyond ``exact_max``. Its cells and probes are kept in the
  output between nights (:mod:`facepipe.storage.ivf_store`); with a ``radius`` it returns only
  the neighbours under it, a comparison in place of a top-k per cell.
- ``faiss``: FAISS ``IndexIVFFlat`` as it comes, for comparison (``ivf.FaissIVFIndex``).

``knn(x, k)`` is the whole graph in one call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from facepipe.flags import flag, non_negative_int

log = logging.getLogger(__name__)

BACKENDS = ("auto", "exact", "ivf", "faiss")


@dataclass(frozen=True)
class IndexConfig:
    """backend: ``auto`` = exact up to ``exact_max`` faces (``exact_max_gpu`` on a GPU), else ``ivf``. nlist: IVF
    cells (0: about 4 sqrt(N)); nprobe: cells scanned per query; train_per_cell / niter: the
    k-means sample per cell and its iterations. shards / shard_min: the ivf search spread over Ray
    actors (:mod:`facepipe.stages.cluster.shards`; 0 = automatic from ``shard_min`` faces)."""

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
    shards: int = flag(
        0,
        "--cluster-shards",
        "spread the neighbour search over this many Ray actors (facepipe.stages.cluster.shards); 1: on the driver; "
        "0: one per node of a multi-node cluster for a night that searches 4,000,000 faces or more",
        type=non_negative_int,
    )
    shard_min: int = 4_000_000

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"kNN backend {self.backend!r} is not one of {BACKENDS}")


class NeighbourIndex:
    """The faces of one clustering run; ``search`` finds neighbours of some of them."""

    backend: str
    shards = 1  # Ray actors it searches on (facepipe.stages.cluster.shards)

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def search_order(self, rows: np.ndarray) -> np.ndarray:
        """The order (indices into ``rows``) in which searching them in parts is fastest."""
        return np.arange(len(rows))

    def close(self) -> None:
        """Let go of what the index holds outside this process (a sharded index's actors)."""


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
    from facepipe.stages.cluster.ivf import FaissIVFIndex, IVFIndex  # the inverted files build on this module

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
