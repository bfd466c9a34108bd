"""Many queries against a FAISS inverted file at once, cell by cell.

FAISS's ``IndexIVFFlat.search`` scans each query's cells face by face: at 10^6 faces, a quarter
of 4,096 cells probed, 10^4 queries took 102 s (bench/RESULTS.md, "The face index kept in the
output"). The same candidates compared the other way round -- for each cell, every query that
probes it against all of its faces in one matrix product, the best k of each query merged over
its cells -- run at BLAS speed, as the cluster stage's own scan does
(:class:`facepipe.stages.cluster.ivf.IVFIndex`). The cells are read in place from FAISS's
inverted lists (no copy of the vectors). Same probes, same faces compared: the answer is FAISS's,
up to the order of exact ties.
"""

from __future__ import annotations

import numpy as np
import torch

from facepipe.stages.cluster.ivf import by_cells


class CellScan:
    """A built ``faiss.IndexIVFFlat``'s cells as torch views, searched many queries at a time."""

    def __init__(self, index) -> None:
        import faiss

        self.index, lists, d = index, index.invlists, index.d
        self.cells: list[tuple[torch.Tensor, torch.Tensor, np.ndarray] | None] = []
        for c in range(index.nlist):
            m = lists.list_size(c)
            if not m:
                self.cells.append(None)
                continue
            codes = faiss.rev_swig_ptr(lists.get_codes(c), m * d * 4).view(np.float32).reshape(m, d)
            ids = faiss.rev_swig_ptr(lists.get_ids(c), m).astype(np.int64)
            xc = torch.from_numpy(codes)  # a view of FAISS's memory: the index must outlive this
            self.cells.append((xc, (xc * xc).sum(1), ids))

    def nearest(self, q: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> (Q, k) ids and squared distances, nearest first (-1 / inf: fewer found)."""
        ids = np.full((len(q), k), -1, np.int64)
        d2 = np.full((len(q), k), np.inf, np.float32)
        for s in range(0, len(q), chunk):
            ids[s : s + chunk], d2[s : s + chunk] = self._chunk(np.ascontiguousarray(q[s : s + chunk], np.float32), k)
        return ids, d2

    def _chunk(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        p = self.index.nprobe
        _, probes = self.index.quantizer.search(q, p)  # (b, p): the cells FAISS would scan
        flat = torch.from_numpy(probes.reshape(-1))
        by_cell, groups = by_cells(flat)
        qt = torch.from_numpy(q)
        qsq = (qt * qt).sum(1)
        best_d = torch.full((len(flat), k), float("inf"))
        best_i = torch.full((len(flat), k), -1, dtype=torch.int64)
        for c, at, m in groups:
            slots = by_cell[at : at + m]
            if c < 0 or self.cells[c] is None:
                continue
            xc, sq, cell_ids = self.cells[c]
            rows = slots // p
            dd = (qsq[rows, None] + sq[None] - 2 * qt[rows] @ xc.T).clamp_min_(0)
            vals, nn = torch.topk(dd, min(k, len(sq)), dim=1, largest=False)
            best_d[slots, : vals.shape[1]] = vals
            best_i[slots, : vals.shape[1]] = torch.from_numpy(cell_ids)[nn]
        vals, pick = torch.topk(best_d.reshape(len(q), -1), k, dim=1, largest=False)
        return torch.gather(best_i.reshape(len(q), -1), 1, pick).numpy(), vals.numpy()
