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

``--steps night1`` alone leaves a night-1 output in ``DIR/nN``; a copy of that folder, given as
``--workdir`` with ``--reuse --steps night2``, measures night 2 again over the same night 1 (one
copy per tree compared: a step changes its folder).
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
import pyarrow as pa

from bench import record


def faces_per_identity() -> float:
    from bench.accuracy.cluster_methods import synthetic

    return len(synthetic(2000)[0]) / 2000


def build(n_faces: int, root: Path, seed: int = 0) -> None:
    """The two nights' faces tables, written a part at a time (10^7 faces would not fit whole)."""
    import pyarrow.parquet as pq

    from bench.accuracy.cluster_methods import synthetic_parts

    sizes, parts = synthetic_parts(int(round(n_faces / faces_per_identity())), seed=seed)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(int(sizes.sum()), min(n_faces, int(sizes.sum())), replace=False))
    n = len(pick)
    night = np.where(rng.random(n) < 0.99, 0, 1)
    det = [rng.uniform(0.5, 1.0, int((night == k).sum())) for k in (0, 1)]
    rank = [np.cumsum(night == k) - 1 for k in (0, 1)]  # a face's row in its night's table
    np.save(root / "truth.npy", np.repeat(np.arange(len(sizes)), sizes)[pick])
    files = [root / f"stage{k}" / f"dt={dt}" / f"part-synthetic-{k}.parquet" for k, dt in enumerate(DAYS)]
    writers = []
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        writers.append(pq.ParquetWriter(f, FACES))
    ids = pq.ParquetWriter(root / "face_ids.parquet", pa.schema([("face_id", pa.string())]))
    start = 0
    for x, _ in parts:
        a, b = np.searchsorted(pick, [start, start + len(x)])
        rows, start = np.arange(a, b), start + len(x)
        face_id = np.array([hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest() for i in rows], object)
        ids.write_table(pa.table({"face_id": pa.array(face_id, pa.string())}))
        for k, w in enumerate(writers):
            m = night[rows] == k
            w.write_table(
                faces_part(face_id[m], x[pick[rows[m]] - (start - len(x))], det[k][rank[k][rows[m]]]),
                row_group_size=100_000,
            )
    for w in [*writers, ids]:
        w.close()


DAYS = ["2026-11-01", "2026-11-02"]


FACES = pa.schema(
    [
        ("face_id", pa.string()),
        ("image_id", pa.string()),
        ("x1", pa.float32()),
        ("x2", pa.float32()),
        ("det_score", pa.float32()),
        ("embedding", pa.list_(pa.float32(), 128)),
        ("embedder", pa.string()),
    ]
)


def faces_part(face_id: np.ndarray, x: np.ndarray, det_score: np.ndarray):
    """Rows of a synthetic faces table (one face per image, like the extract job's columns the
    cluster stage reads)."""
    n = len(face_id)
    return pa.table(
        {
            "face_id": pa.array(face_id, pa.string()),
            "image_id": pa.array(["img-" + f for f in face_id], pa.string()),
            "x1": pa.array(np.zeros(n), pa.float32()),
            "x2": pa.array(np.full(n, 100.0), pa.float32()),
            "det_score": pa.array(det_score, pa.float32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1]),
            "embedder": pa.array(["dlib_resnet@synthetic"] * n, pa.string()),
        },
        schema=FACES,
    )


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
    """This process's own peak RSS (VmHWM, of its memory since exec: ``ru_maxrss`` would carry the
    bench parent's into the step, :func:`facepipe.stages.cluster.phases.peak_gib`)."""
    from facepipe.stages.cluster.phases import peak_gib

    return peak_gib()


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


class Snapshot:
    """A night's ``face_identity`` as arrays in the bench's face order (``face_ids.parquet``):
    ``codes`` per face (-2: not in the snapshot, -1: in it without an identity, else an index of
    ``names``). Arrays, not a dict of 10^7 strings: the bench's parent stays small while a step runs."""

    def __init__(self, root: Path) -> None:
        import duckdb

        sql = (
            f"select f.file_row_number as row, i.identity_id from read_parquet('{root}/face_ids.parquet', "
            f"file_row_number=true) f join read_parquet('{root}/out/face_identity/*/*.parquet') i using (face_id)"
        )
        t = duckdb.sql(sql).to_arrow_table()
        ids = t.column("identity_id").combine_chunks().dictionary_encode()
        self.names = np.array(ids.dictionary.to_pylist(), dtype=object)
        self.codes = np.full(_rows(root), -2, np.int64)
        self.codes[t.column("row").to_numpy()] = ids.indices.fill_null(-1).to_numpy()

    @property
    def present(self) -> np.ndarray:
        return self.codes > -2

    def ids(self, where: np.ndarray) -> np.ndarray:
        """The identity ids of the faces ``where`` selects (None: unassigned)."""
        c = self.codes[where]
        if not len(self.names):
            return np.full(len(c), None, dtype=object)
        return np.where(c >= 0, self.names[np.maximum(c, 0)], None)


def parts(phases: dict) -> str:
    """A step's parts (the stage's ``phases``): seconds each, and the peak memory where it rose."""
    out, peak = [], 0.0
    for name, p in phases.items():
        rose = p["peak_gib"] is not None and p["peak_gib"] > peak + 0.05
        out.append(f"{name} {p['s']:.1f}s" + (f" ({p['peak_gib']:.2f} GiB)" if rose else ""))
        peak = max(peak, p["peak_gib"] or 0.0)
    return ", ".join(out)


def _rows(root: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(root / "face_ids.parquet").metadata.num_rows


def quality(root: Path) -> tuple[str, Snapshot]:
    from facepipe.stages.cluster.metrics import evaluate_clusters

    snap = Snapshot(root)
    have = snap.present  # night 1 has 99% of the faces
    return str(evaluate_clusters(snap.ids(have), np.load(root / "truth.npy")[have])), snap


def changed(night1: Snapshot, night2: Snapshot) -> int:
    """Night-1 faces whose identity id night 2 changed."""
    have = night1.present
    return int((night1.ids(have) != night2.ids(have)).sum())


def against_full(night: Snapshot, full: Snapshot) -> str:
    """The incremental night's identities scored against the full run's of the same faces (the
    issue's bar: BCubed F >= 0.999; pair precision 1: no merge the full run does not make). An
    unassigned face is a group of its own."""
    from facepipe.stages.cluster.metrics import evaluate_clusters

    have = full.present
    truth = full.ids(have)
    alone = np.flatnonzero(truth == None)  # noqa: E711 -- elementwise on an object array
    truth[alone] = -1 - alone  # a group of its own (negative ints are no identity's id)
    r = evaluate_clusters(night.ids(have), truth)
    bcubed = f"BCubed P {r.bcubed_precision:.4f} R {r.bcubed_recall:.4f} F {r.bcubed_f:.4f}"
    return f"{bcubed}, pair precision {r.pairwise_precision:.5f}"


def merges_against_full(root: Path, night1: Snapshot, night2: Snapshot, full: Snapshot, cut: float) -> str:
    """Night 2's merge events: how many the full run makes too (the identities they join end in
    one of its identities); of those it does not, how many join faces of one true person, and
    how many rest on exact links: the night-2 identity's faces, their exact distances under
    ``cut`` (night 2's farthest: its second pass's), join every night-1 identity merged (links
    the full run's k-nearest graph, searched over the approximate index, does not hold)."""
    import duckdb

    truth = np.load(root / "truth.npy")
    events = f"read_parquet('{root}/out/identity_events/*/*.parquet')"
    sql = f"select old_ids from {events} where event = 'merge' and run_id = 'night2'"
    code = {name: c for c, name in enumerate(night1.names)}
    merges = [np.isin(night1.codes, [code[o] for o in old]) for (old,) in duckdb.sql(sql).fetchall()]
    apart = [m for m in merges if len(set(full.ids(m))) > 1]
    right = sum(len(set(truth[m])) == 1 for m in apart)
    linked = sum(_exactly_linked(root, night1, night2, m, cut) for m in apart)
    made = f"{len(merges) - len(apart)} of night 2's {len(merges)} merges made by the full run too"
    return f"{made}; of the other {len(apart)}, {right} join one true person, {linked} on exact links under {cut}"


def _exactly_linked(root: Path, night1: Snapshot, night2: Snapshot, merged: np.ndarray, cut: float) -> bool:
    """Whether exact links under ``cut`` among the faces of the night-2 identity holding the
    ``merged`` faces join all their night-1 identities."""
    import duckdb

    from facepipe.stages.cluster.methods import threshold_components

    (ident,) = set(night2.codes[merged].tolist())
    rows = np.flatnonzero(night2.codes == ident)
    sql = (
        f"select f.file_row_number as row, x.embedding from read_parquet('{root}/face_ids.parquet', "
        f"file_row_number=true) f join read_parquet('{root}/out/faces/*/*.parquet') x using (face_id) "
        f"where f.file_row_number in ({','.join(map(str, rows.tolist()))}) order by row"
    )
    got = duckdb.sql(sql).fetchall()
    x = np.array([e for _, e in got], np.float32)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1)
    parts = threshold_components(idx, np.take_along_axis(d, idx, 1), cut)
    old = night1.codes[np.array([r for r, _ in got])]
    held = old >= 0
    return len(set(parts[held & np.isin(old, night1.codes[merged])].tolist())) == 1


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
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="the workdir holds night 1 (a copy of a run's): run the steps on it",
    )
    a = ap.parse_args()
    if a.step:
        step(Path(a.workdir), a.step, a.threshold, a.shards)
        return
    import shutil

    print(f"{os.cpu_count()} CPUs; synthetic identities of ~{faces_per_identity():.2f} faces")
    for n in a.faces:
        root = Path(a.workdir) / f"n{n}"
        night1 = night2 = None
        if a.reuse:  # its night 1, as it left it
            night1 = quality(root)[1]
            print(f"\n== {n} faces (night 1 of {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            t = time.perf_counter()
            build(n, root)
            print(f"\n== {n} faces (table written in {time.perf_counter() - t:.0f}s)")
        cut = 0.0
        for name in a.steps:
            s, wall, rss = run_step(root, name, a.threshold, a.shards)
            q, ids = quality(root)
            extra = ""
            if name == "night1":
                night1 = ids
            elif name == "night2":
                night2, cut = ids, max(s["threshold"]["value"], s["threshold"]["linkage"] or 0.0)
                extra = f"; night-1 faces whose id changed: {changed(night1, ids)} of {int(night1.present.sum())}"
            else:
                extra = "; night 2 against a full run: " + against_full(night2, ids)
                extra += "\n        " + merges_against_full(root, night1, night2, ids, cut)
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
            distinct = len(np.unique(ids.codes[ids.codes >= 0]))
            assert distinct == s["identities"], (
                f"{distinct} distinct ids in face_identity for {s['identities']} identities"
            )
            print(
                f"        identities {s['identities']}  merges {s['merges']} splits {s['splits']}  kept ids "
                f"{s['reused_ids']}{extra}"
            )
            print(f"        vs truth: {q}")
            print("        parts: " + parts(s.get("phases", {})))
        if not a.no_recall:
            for line in edge_recall(root):
                print("        " + line)


if __name__ == "__main__":
    record.run(main, "bench.speed.cluster_scale")
