"""Identity clustering at scale: the cluster stage over 100k and 1M synthetic faces.

    .venv/bin/python -m bench.speed.cluster_scale --faces 100000 1000000 [--workdir DIR]

For each size N it writes a faces table (Parquet, like the extract job's) of synthetic 128-d
embeddings that mimic dlib's (bench/accuracy/cluster_methods.py: Zipf identity sizes 1-80, same-person
0.25-0.5 apart, 5% look-alikes; ~7 faces per identity, so 1M faces are ~142k identities), then
runs three steps of ``facepipe.stages.cluster.stage.run_cluster``, each in its own process so its wall
time and peak memory (VmHWM: see own_peak_gib) are its own:

1. night 1: 99% of the faces, first snapshot (a full clustering);
2. night 2: the other 1% arrive -- the incremental nightly path;
3. ``--full``: every face re-clustered, ids reused by overlap.

and prints, per step, wall time, peak RSS, the kNN backend, and the metrics of the resulting
identities against the known ground truth; for step 2 also how many night-1 faces changed id;
and the recall of the IVF graph's edges under the clustering threshold against the exact graph
on a sample of faces.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench import record


def faces_per_identity() -> float:
    from bench.accuracy.cluster_methods import synthetic

    return len(synthetic(2000)[0]) / 2000


def build(n_faces: int, root: Path, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.accuracy.cluster_methods import synthetic

    x, y = synthetic(int(round(n_faces / faces_per_identity())), seed=seed)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(x), min(n_faces, len(x)), replace=False))
    x, y = x[pick], y[pick]
    n = len(x)
    face_id = np.array([hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest() for i in range(n)], dtype=object)
    night = np.where(rng.random(n) < 0.99, 0, 1)
    np.save(root / "truth.npy", y)
    pq.write_table(pa.table({"face_id": face_id}), root / "face_ids.parquet")
    for k, dt in enumerate(["2026-11-01", "2026-11-02"]):
        sel = np.flatnonzero(night == k)
        t = pa.table(
            {
                "face_id": pa.array(face_id[sel], pa.string()),
                "image_id": pa.array(["img-" + f for f in face_id[sel]], pa.string()),  # one face per image
                "x1": pa.array(np.zeros(len(sel)), pa.float32()),
                "x2": pa.array(np.full(len(sel), 100.0), pa.float32()),
                "det_score": pa.array(rng.uniform(0.5, 1.0, len(sel)), pa.float32()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x[sel].reshape(-1), pa.float32()), x.shape[1]),
                "embedder": pa.array(["dlib_resnet@synthetic"] * len(sel), pa.string()),
            }
        )
        d = root / f"stage{k}" / f"dt={dt}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / f"part-synthetic-{k}.parquet", row_group_size=100_000)


def step(root: Path, name: str, threshold: str, shards: int = 0) -> None:
    """One run_cluster call, in this process; prints a JSON line."""
    from facepipe.stages.cluster.graph import IndexConfig
    from facepipe.stages.cluster.stage import ClusterConfig as Config
    from facepipe.stages.cluster.stage import run_cluster
    from facepipe.stages.cluster.threshold import threshold_setting

    def ClusterConfig(**kw):  # noqa: N802 -- the stage's config with this run's --threshold and --shards
        return Config(threshold=threshold_setting(threshold), index=IndexConfig(shards=shards), **kw)

    out = root / "out"
    faces = out / "faces"
    faces.mkdir(parents=True, exist_ok=True)
    if name == "night1":
        os.replace(root / "stage0" / "dt=2026-11-01", faces / "dt=2026-11-01")
        summary = run_cluster(str(out), "2026-11-01", "night1", ClusterConfig())
    elif name == "night2":
        os.replace(root / "stage1" / "dt=2026-11-02", faces / "dt=2026-11-02")
        summary = run_cluster(str(out), "2026-11-02", "night2", ClusterConfig())
    else:
        summary = run_cluster(str(out), "2026-11-02", "full", ClusterConfig(full=True))
    summary.pop("files", None)
    summary.pop("config", None)
    summary["peak_gib"] = own_peak_gib()
    print("RESULT " + json.dumps(summary))


def own_peak_gib() -> float:
    """This process's own peak RSS (VmHWM, of its memory since exec). Not ``ru_maxrss``: Linux
    carries the parent's high-water mark into a child across fork and exec, so a step started by
    a parent that held 6.7 GiB (this bench's, after building 3x10^6 faces) reported 6.7 GiB
    whatever it held itself."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 2**20


def run_step(root: Path, name: str, threshold: str, shards: int = 0) -> tuple[dict, float, float]:
    t = time.perf_counter()
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.speed.cluster_scale",
            "--step",
            name,
            "--workdir",
            str(root),
            "--threshold",
            threshold,
            "--shards",
            str(shards),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
    )
    _, status, _ = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    outp = p.stdout.read()
    if status != 0:
        raise SystemExit(f"step {name} failed ({status}):\n{outp}")
    line = next(ln for ln in outp.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[7:])
    return result, wall, result["peak_gib"]


def quality(root: Path) -> tuple[str, dict[str, str | None]]:
    import duckdb
    import pyarrow.parquet as pq

    from facepipe.stages.cluster.metrics import evaluate_clusters

    fids = pq.read_table(root / "face_ids.parquet").column("face_id").to_pylist()
    y = np.load(root / "truth.npy")
    got = dict(
        duckdb.sql(f"select face_id, identity_id from read_parquet('{root}/out/face_identity/*/*.parquet')").fetchall()
    )
    have = [i for i, f in enumerate(fids) if f in got]  # night 1 has 99% of them
    return str(evaluate_clusters([got[fids[i]] for i in have], y[have].tolist())), got


def against_full(night: dict[str, str | None], full: dict[str, str | None]) -> str:
    """The incremental night's identities scored against the full run's of the same faces (the
    issue's bar: BCubed F >= 0.999; pair precision 1: no merge the full run does not make). An
    unassigned face is a group of its own."""
    from facepipe.stages.cluster.metrics import evaluate_clusters

    faces = sorted(full)
    r = evaluate_clusters([night[f] or f"-{f}" for f in faces], [full[f] or f"-{f}" for f in faces])
    bcubed = f"BCubed P {r.bcubed_precision:.4f} R {r.bcubed_recall:.4f} F {r.bcubed_f:.4f}"
    return f"{bcubed}, pair precision {r.pairwise_precision:.5f}"


def merges_against_full(root: Path, night1: dict[str, str | None], full: dict[str, str | None]) -> str:
    """Night 2's merge events: how many the full run makes too (the identities they join end in
    one of its identities), and of those it does not, how many join faces of one true person."""
    import duckdb
    import pyarrow.parquet as pq

    fids = pq.read_table(root / "face_ids.parquet").column("face_id").to_pylist()
    truth = dict(zip(fids, np.load(root / "truth.npy").tolist()))
    events = f"read_parquet('{root}/out/identity_events/*/*.parquet')"
    sql = f"select old_ids from {events} where event = 'merge' and run_id = 'night2'"
    faces: dict[str, list[str]] = {}
    for f, i in night1.items():
        faces.setdefault(i, []).append(f)
    merges = [old for (old,) in duckdb.sql(sql).fetchall()]
    apart = [old for old in merges if len({full[f] for o in old for f in faces[o]}) > 1]
    right = sum(len({truth[f] for o in old for f in faces[o]}) == 1 for old in apart)
    made = f"{len(merges) - len(apart)} of night 2's {len(merges)} merges made by the full run too"
    return f"{made}; of the other {len(apart)}, {right} join one true person"


def edge_recall(
    root: Path, sample: int = 5_000, timed: int = 20_000, threshold: float = 0.55, k: int = 10
) -> list[str]:
    """Edges under the threshold among the k nearest, against the exact graph on a sample, for
    the ivf backend (the default beyond 20k faces) and FAISS's IndexIVFFlat with the same cells
    and probes; and the time each takes to search ``timed`` faces."""
    import pyarrow.dataset as pads

    from facepipe.stages.cluster.graph import ExactIndex, IndexConfig, build_index

    t = pads.dataset(root / "out" / "faces", format="parquet").to_table(columns=["embedding"])
    x = t.column("embedding").combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1).copy()
    rng = np.random.default_rng(1)
    rows = rng.choice(len(x), min(sample, len(x)), replace=False)
    timed_rows = rng.choice(len(x), min(timed, len(x)), replace=False)
    ei, ed = ExactIndex(x, device="cpu").search(rows, k)
    want = {(int(r), int(j)) for r, js, ds in zip(rows, ei, ed) for j, d in zip(js, ds) if d < threshold}
    lines = []
    for backend in ("ivf", "faiss"):
        t0 = time.perf_counter()
        index = build_index(x, IndexConfig(backend=backend))
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        index.search(timed_rows, k)
        per = (time.perf_counter() - t0) / len(timed_rows)
        ii, idd = index.search(rows, k)
        got = {(int(r), int(j)) for r, js, ds in zip(rows, ii, idd) for j, d in zip(js, ds) if d < threshold}
        lines.append(
            f"{backend:5s} nlist {index.nlist} nprobe {index.nprobe}: build {build:.1f}s, search "
            f"{per * 1e6:.0f} us/face "
            f"(all {len(x)}: {per * len(x):.0f}s); {len(want & got) / max(len(want), 1):.4f} of the exact "
            f"graph's {len(want)} edges under {threshold} on {len(rows)} faces"
        )
    return lines


def _default_threshold() -> float | str:
    from facepipe.stages.cluster.stage import ClusterConfig

    return ClusterConfig().threshold


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--workdir", default="/tmp/facepipe-cluster-scale")
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-recall", action="store_true", help="skip the IVF-vs-exact edge recall (slow on a CPU at 1M)")
    ap.add_argument("--threshold", default=str(_default_threshold()), help="--cluster-threshold: a distance or auto")
    ap.add_argument("--shards", type=int, default=0, help="--cluster-shards (a local Ray cluster when > 1)")
    ap.add_argument("--steps", nargs="+", default=["night1", "night2", "full"], choices=["night1", "night2", "full"])
    a = ap.parse_args()
    if a.step:
        step(Path(a.workdir), a.step, a.threshold, a.shards)
        return
    import shutil

    print(f"{os.cpu_count()} CPUs; synthetic identities of ~{faces_per_identity():.2f} faces")
    for n in a.faces:
        root = Path(a.workdir) / f"n{n}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        t = time.perf_counter()
        build(n, root)
        print(f"\n== {n} faces (table written in {time.perf_counter() - t:.0f}s)")
        night1 = night2 = None
        for name in a.steps:
            s, wall, rss = run_step(root, name, a.threshold, a.shards)
            q, ids = quality(root)
            extra = ""
            if name == "night1":
                night1 = ids
            elif name == "night2":
                night2, changed = ids, sum(1 for f, i in night1.items() if ids[f] != i)
                extra = f"; night-1 faces whose id changed: {changed} of {len(night1)}"
            else:
                extra = "; night 2 against a full run: " + against_full(night2, ids)
                extra += "\n        " + merges_against_full(root, night1, ids)
            print(
                f"{name:7s} {s['mode']:11s} threshold {s['threshold']['value']:.3f} "
                f"faces {s['faces']:8d} placed {s['placed']:8d} region {s['region']:8d}  "
                f"wall {wall:6.1f}s (stage {s['wall_s']:.1f}s, index {s['index']['backend']} "
                f"{s['index']['build_s']:.1f}s)  peak RSS {rss:.2f} GiB"
                + (
                    f" (+ {s['index']['shards']} shards: {s['index'].get('shard_peak_gib')} GiB)"
                    if a.shards > 1
                    else ""
                )
            )
            distinct = len({i for i in ids.values() if i is not None})
            assert distinct == s["identities"], (
                f"{distinct} distinct ids in face_identity for {s['identities']} identities"
            )
            print(
                f"        identities {s['identities']}  merges {s['merges']} splits {s['splits']}  kept ids "
                f"{s['reused_ids']}{extra}"
            )
            print(f"        vs truth: {q}")
        if not a.no_recall:
            for line in edge_recall(root):
                print("        " + line)


if __name__ == "__main__":
    record.run(main, "bench.speed.cluster_scale")
