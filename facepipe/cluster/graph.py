"""k-nearest-neighbour graphs of embeddings: exact, in blocked matrix products (torch).

``knn(x, k)`` -> ``(idx, dist)``, both (N, k), neighbours by increasing Euclidean distance, the
point itself excluded. Memory is O(block * N) per step, so any N fits; time is O(N^2 D) -- the
exact graph is for up to a few hundred thousand faces (an ANN index takes over beyond).
"""

from __future__ import annotations

import numpy as np
import torch


def knn(x: np.ndarray, k: int, block: int = 2048, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row of ``x`` (N, D) among the others."""
    n = len(x)
    k = min(k, max(n - 1, 0))
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)
    sq = (xt * xt).sum(1)
    idx = np.empty((n, k), np.int64)
    dist = np.empty((n, k), np.float32)
    for s in range(0, n, block):
        q = xt[s : s + block]
        d2 = (sq[s : s + block, None] + sq[None, :] - 2 * q @ xt.T).clamp_min_(0)
        d2[torch.arange(len(q)), torch.arange(s, s + len(q))] = float("inf")  # not your own neighbour
        vals, ids = torch.topk(d2, k, dim=1, largest=False)
        idx[s : s + len(q)] = ids.cpu().numpy()
        dist[s : s + len(q)] = vals.sqrt().cpu().numpy()
    return idx, dist
