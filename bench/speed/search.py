"""Search by face (``facepipe search``, ``facepipe.tools.search.FaceIndex``): open time, latency
and throughput over 10^5-10^6 synthetic faces, and precision on the real labelled photos.

    .venv/bin/python -m bench.speed.search --faces 100000 1000000 [--work DIR] [--wild DIR --portraits DIR] [--kept]

For each size it writes an output of synthetic faces (``faces`` and ``images`` tables as the job
writes them; ``bench.accuracy.cluster_methods``' identities) and measures: the index's open time
and the process's peak RSS; single-query latency (k = 20, one query at a time, 300 queries: p50,
p99); batch throughput (10^4 queries, k = 10); recall@10 against a float64 numpy brute force on
100 queries (the index is exact: 1.0 unless float32 rounding swaps ties). With ``--wild`` /
``--portraits`` (the benches' ``--work`` caches) it also reports, on the real photos, how often a
photo's nearest other faces are the same person: precision@5 over the faces whose person has
at least 5 other photos, and the share whose nearest other face is the same person. With
``--kept`` the index opens on the cells the cluster stage keeps in the output (the stage is run
once first), as it does on a clustered archive.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from bench import record

MODELS = ("yunet@synthetic", "dlib_resnet@synthetic", "dlib_sp5:synthetic")


def build(n: int, root: Path) -> np.ndarray:
    """An output of ``n`` synthetic faces under ``root``; returns their embeddings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.accuracy.threshold_curve import synthetic_faces

    x, _ = synthetic_faces(n)
    if (root / "faces").exists():
        return x
    ids = [f"{i:032x}" for i in range(len(x))]
    col = lambda v: pa.array([v] * len(x), pa.string())  # noqa: E731
    zeros = pa.array(np.zeros(len(x)), pa.float32())
    faces = pa.table(
        {
            "face_id": pa.array(ids, pa.string()),
            "image_id": pa.array(["i" + f for f in ids], pa.string()),
            "face_index": pa.array(np.zeros(len(x), np.int32)),
            **{c: zeros for c in ("x1", "y1", "x2", "y2")},
            "detector": col(MODELS[0]),
            "embedder": col(MODELS[1]),
            "align": col(MODELS[2]),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1]),
        }
    )
    images = pa.table({"image_id": faces["image_id"], "source_uri": pa.array([f"s3://a/{f}.jpg" for f in ids])})
    for name, t in (("faces", faces), ("images", images)):
        (root / name / "dt=2026-12-06").mkdir(parents=True)
        pq.write_table(t, root / name / "dt=2026-12-06" / "part-0.parquet", row_group_size=100_000)
    return x


def speed(n: int, work: Path, kept: bool = False) -> dict:
    """``kept``: open on the cells the cluster stage keeps (it is run first when it has not been)."""
    from facepipe.tools.search import FaceIndex

    x = build(n, work / f"n{n}")
    if kept and not (work / f"n{n}" / "_index").exists():
        from facepipe.stages.cluster.stage import ClusterConfig, run_cluster

        run_cluster(str(work / f"n{n}"), "2026-12-06", "bench-cluster", ClusterConfig(min_face=0))  # boxes are zeros
    t = time.perf_counter()
    index = FaceIndex.open(str(work / f"n{n}"))
    opened = time.perf_counter() - t
    rng = np.random.default_rng(0)
    q = x[rng.choice(len(x), 10_000, replace=False)] + rng.normal(0, 0.02, (10_000, x.shape[1])).astype(np.float32)
    index.nearest(q[:5], 20)  # warm
    lat = []
    for i in range(300):
        t = time.perf_counter()
        index.nearest(q[i : i + 1], 20)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    index.nearest(q, 10)
    batch = time.perf_counter() - t
    got, _ = index.nearest(q[:100], 10)
    ref = np.argsort(_ref(q[:100], x), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)])
    r = {
        "faces": len(index),
        "index": index.kind,
        "open_s": round(opened, 2),
        "p50_ms": round(1000 * float(np.percentile(lat, 50)), 2),
        "p99_ms": round(1000 * float(np.percentile(lat, 99)), 2),
        "batch_10k_s": round(batch, 2),
        "queries_per_s": round(10_000 / batch),
        "recall_at_10": round(float(recall), 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    print(r, flush=True)
    return r


def _ref(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Squared distances of ``q`` to every ``x``, in float64."""
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    return (q64**2).sum(1)[:, None] + (x64**2).sum(1)[None] - 2 * q64 @ x64.T


def precision(name: str, x: np.ndarray, y: np.ndarray) -> dict:
    """Each face as a query among the others: precision@5 (faces whose person has 5+ other
    photos) and the share whose nearest other face is the same person."""
    d = _ref(x, x)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :5]
    same = y[near] == y[:, None]
    others = np.array([(y == v).sum() - 1 for v in y])
    r = {
        "faces": len(x),
        "precision_at_5": round(float(same[others >= 5].mean()), 4) if (others >= 5).any() else None,
        "queries_with_5": int((others >= 5).sum()),
        "nearest_is_same_person": round(float(same[others >= 1, 0].mean()), 4),
        "queries_with_1": int((others >= 1).sum()),
    }
    print(name, r, flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--work", type=Path, default=Path("/tmp/search_bench"))
    ap.add_argument("--wild", type=Path, help="wild_set's --work folder (its cached wild.npz)")
    ap.add_argument("--portraits", type=Path, help="portraits_set's --work folder (its cached portraits.npz)")
    ap.add_argument("--kept", action="store_true", help="open on the cells the cluster stage keeps (clusters first)")
    a = ap.parse_args()
    from bench.accuracy.labelled_photos import load

    for path, name in ((a.wild, "wild"), (a.portraits, "portraits")):
        if path:
            s = load(path / f"{name}.npz")
            wide = s.widths >= 40
            record.numbers(**{name: precision(name, s.x[wide], s.labels[wide])})
    for n in a.faces:
        record.numbers(**{str(n): speed(n, a.work, a.kept)})


if __name__ == "__main__":
    record.run(main, "bench.speed.search")
