"""What storing the embeddings as fp16 would cost the neighbour search (issue 30: "fp16 is enough
for dlib's 128-d; measure recall"): exact k nearest neighbours of sampled faces with the vectors
as written (fp32) and rounded to fp16, over the same archive.

    .venv/bin/python -m bench.accuracy.fp16_vectors OUT/faces [--queries 2000] [--cut 0.52]

OUT: an output the job or ``bench.speed.cluster_scale`` wrote (its ``faces`` table). Prints
recall@10 of the fp16 search against the fp32 one, the share of the fp32 neighbours under the
clustering cut that the fp16 search keeps under it (the edges the identities are made of), and
the largest change of a distance.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench import record


def knn(x: np.ndarray, rows: np.ndarray, k: int = 10, block: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest of ``x[rows]`` among ``x`` (the face itself left out), by distance."""
    b = torch.from_numpy(x)
    sq = (b * b).sum(1)
    ids, dist = [], []
    for s in range(0, len(rows), block):
        r = torch.from_numpy(rows[s : s + block])
        d2 = (sq[r, None] + sq[None] - 2 * b[r] @ b.T).clamp_min(0)
        d2[torch.arange(len(r)), r] = float("inf")
        v, i = torch.topk(d2, k, largest=False)
        ids.append(i.numpy())
        dist.append(v.sqrt().numpy())
    return np.vstack(ids), np.vstack(dist)


def main() -> None:
    import pyarrow.dataset as pads

    ap = argparse.ArgumentParser()
    ap.add_argument("faces", help="an output's faces table folder")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--cut", type=float, default=0.52, help="the clustering cut (the 1M bench's auto cut)")
    a = ap.parse_args()
    t = pads.dataset(a.faces, format="parquet", partitioning="hive").to_table(columns=["embedding"])
    x = t.column("embedding").combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1).astype(np.float32)
    x16 = x.astype(np.float16).astype(np.float32)
    q = np.random.default_rng(0).choice(len(x), min(a.queries, len(x)), replace=False)
    i32, d32 = knn(x, q)
    i16, d16 = knn(x16, q)
    recall = float(np.mean([len(set(u) & set(v)) / i32.shape[1] for u, v in zip(i32, i16)]))
    under = {(r, j) for r, js, ds in zip(q, i32, d32) for j, d in zip(js, ds) if d < a.cut}
    kept = {(r, j) for r, js, ds in zip(q, i16, d16) for j, d in zip(js, ds) if d < a.cut}
    moved = float(np.abs(np.linalg.norm(x16[q][:, None] - x16[i32], axis=2) - d32).max())
    print(f"{len(x)} faces, {len(q)} queries: recall@10 of fp16 against fp32 {recall:.4f}")
    print(f"neighbours under {a.cut}: {len(under & kept) / max(len(under), 1):.5f} of {len(under)} kept")
    print(f"largest change of a distance: {moved:.2e}")
    record.numbers(recall_at_10=recall, edges_kept=len(under & kept) / max(len(under), 1), max_change=moved)


if __name__ == "__main__":
    record.run(main, "bench.accuracy.fp16_vectors")
