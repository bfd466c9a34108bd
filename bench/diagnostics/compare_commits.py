"""Does a change keep the job's output? Run ``facepipe demo`` at two commits and compare every
output table row for row (ids, boxes, landmarks, embeddings, identities), plus the manifest counts.

    .venv/bin/python -m bench.diagnostics.compare_commits OLD_COMMIT NEW_COMMIT [--inputs DIR] [--ignore COLUMN ...]

``--inputs DIR``: run ``facepipe run DIR`` (fixed run id and date) instead of the demo, e.g. on the
real identity set's photo archive (``bench/accuracy/cluster_real.py``'s ``real_set(..., archive=DIR)``).
``--ignore COLUMN``: leave a column out of the comparison -- only for one whose change is the
point, such as ``detector`` when the weights file moved but its tensors did not.

Each commit is checked out in a temporary git worktree and run with this venv (PYTHONPATH points
at the worktree); both runs use the same work folder, since ``source_uri`` -- and so every id --
depends on the path. A local Ray is started by the demo itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

from bench import record

REPO = Path(__file__).resolve().parents[2]
QUERIES = {
    "images": "select image_id, source_uri, width, height, status, error, n_faces, run_id from T order by all",
    "faces": "select face_id, image_id, face_index, x1, y1, x2, y2, det_score, landmarks, embedding, detector, "
    "embedder, align, landmark_offsets, sharpness, face_logit, run_id from T order by face_id",
    "face_outliers": "select face_id, drocc_score, outlier_score, is_outlier, threshold, model_id from T order by all",
    "identities": "select identity_id, n_faces, centroid, representative_face_id, first_seen_dt, last_seen_dt, "
    "embedder from T order by all",
    "face_identity": "select face_id, identity_id, distance from T order by all",
}


def run_demo(commit: str, tmp: Path, inputs: Path | None = None, side: str = "") -> Path:
    tree, work, keep = tmp / f"tree-{side}{commit}", tmp / "work", tmp / f"out-{side}{commit}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(tree), commit], check=True)
    try:
        env = dict(os.environ, PYTHONPATH=str(tree), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        cmd = [sys.executable, "-m", "facepipe.cli", "demo", "--workdir", str(work)]
        if inputs is not None:
            run = ["run", str(inputs), "--output", str(work / "output"), "--run-id", "demo", "--dt", "2026-11-23"]
            cmd = [sys.executable, "-m", "facepipe.cli", *run]
        r = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"{commit}: run failed: {r.stderr[-2000:]}")
        print(f"{commit}: " + next(ln.strip() for ln in r.stdout.splitlines() if ln.strip().startswith("images")))
        shutil.move(str(work / "output"), keep)
        shutil.rmtree(work)
        return keep
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--inputs", type=Path, help="run the job on this archive instead of the demo")
    ap.add_argument("--ignore", nargs="*", default=[], help="columns left out of the comparison")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [run_demo(c, Path(tmp), args.inputs, side) for c, side in ((args.old, "a-"), (args.new, "b-"))]
        same = True
        for table, q in QUERIES.items():
            present = [(o / table).is_dir() for o in outs]
            if not any(present):
                print(f"{table:14s} written by neither run")
                continue
            for col in args.ignore:
                q = q.replace(f" {col}, ", " ").replace(f", {col} ", " ")
            a, b = (duckdb.sql(q.replace("T", f"read_parquet('{o}/{table}/*/*.parquet')")).fetchall() for o in outs)
            print(f"{table:14s} rows {len(a):4d} / {len(b):4d}  identical: {a == b}")
            record.numbers(**{table: {"rows": [len(a), len(b)], "identical": a == b}})
            diff = [(x, y) for x, y in zip(a, b) if x != y]
            if diff:
                print(f"  {len(diff)} rows differ; first:\n    {str(diff[0][0])[:300]}\n    {str(diff[0][1])[:300]}")
            same &= a == b
        ma, mb = (json.loads((o / "_runs" / "demo.json").read_text()) for o in outs)
        models = [k for k in ("detector", "embedder") if k not in args.ignore]
        counts = ma["counts"] == mb["counts"] and all(ma[k] == mb[k] for k in models)
        print(f"manifest counts and model ids ({', '.join(models)}) identical: {counts}")
        for k in args.ignore:
            if k in ma:
                print(f"ignored {k}: {ma[k]} -> {mb[k]}")
        print("ALL IDENTICAL" if same and counts else "DIFFERENT")
        return 0 if same and counts else 1


if __name__ == "__main__":
    record.run(main, "bench.diagnostics.compare_commits")
