"""The night after an erasure: the kept index with the erased faces taken out, against the index dropped

    .venv/bin/python -m bench.speed.forget_index ROOT --work DIR

``ROOT``: a ``bench.speed.cluster_scale`` size folder after its first night (``ROOT/out``, the
night-1 output, and ``ROOT/stage1``, the 1% of faces night 2 adds). Both are copied three times into
``DIR``; in each copy ``facepipe forget`` erases the largest identity; in the second the whole
kept index is then deleted (what an erasure did before ``facepipe.storage.index_erase``); a
third copy erases nothing. Night 2 then adds its faces and runs on all three (the stage's
defaults, the cut the snapshot keeps). Each step is its own process: its seconds and peak RSS,
what the index did; and each erased night's ``face_identity`` against the night with no
erasure, on the faces both hold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import record


def largest_identity(out: Path) -> str:
    import duckdb

    sql = (
        f"select identity_id from read_parquet('{out}/face_identity/*/*.parquet') where identity_id is not null "
        "group by identity_id order by count(*) desc, identity_id limit 1"
    )
    return duckdb.sql(sql).fetchall()[0][0]


def step(name: str, out: Path, identity: str) -> None:
    """One step in this process; prints a RESULT line."""
    from facepipe.stages.cluster.phases import peak_gib

    t = time.perf_counter()
    if name == "forget":
        from facepipe.tools.erase import ForgetRequest, forget

        audit = forget(str(out), ForgetRequest(identity_ids=(identity,), request_id="bench-erase"))
        found = {"faces": audit["erased"]["faces"], "index_files_deleted": sum(
            f.startswith("_index/") for f in audit["files_deleted"]), "index_files_rewritten": sum(
            f.startswith("_index/") for f in audit["files_rewritten"])}  # fmt: skip
    else:
        from facepipe.stages.cluster.stage import ClusterConfig, run_cluster

        s = run_cluster(str(out), "2026-11-02", "night2", ClusterConfig())
        found = {k: s["index"].get(k) for k in ("kept", "trained", "assigned", "searched", "lists_kept")}
    found.update(seconds=round(time.perf_counter() - t, 1), peak_gib=round(peak_gib(), 2))
    print("RESULT " + json.dumps(found), flush=True)


def run_step(name: str, out: Path, identity: str) -> dict:
    cmd = [sys.executable, "-m", "bench.speed.forget_index", str(out), "--step", name, "--identity", identity]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def differing_rows(a: Path, b: Path) -> int:
    """``face_identity`` rows of the faces both hold that differ (identity or status)."""
    import duckdb

    fi = "select face_id, identity_id, status from read_parquet('{}/face_identity/*/*.parquet')"
    sql = f"select count(*) from ({fi.format(a)}) x join ({fi.format(b)}) y using (face_id) where " + (
        "x.identity_id is distinct from y.identity_id or x.status is distinct from y.status"
    )
    return duckdb.sql(sql).fetchall()[0][0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path, help="a cluster_scale size folder after night 1")
    ap.add_argument("--work", type=Path, default=Path("/tmp/facepipe-forget-index"))
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--identity", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.step:
        step(a.step, a.out, a.identity)
        return None
    identity = largest_identity(a.out / "out")
    copies = {"kept": a.work / "kept", "dropped": a.work / "dropped", "no erasure": a.work / "none"}
    results = {}
    for how, root in copies.items():
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(a.out / "out", root)
        erased = run_step("forget", root, identity) if how != "no erasure" else {}
        if how == "dropped":
            shutil.rmtree(root / "_index")
        tonight = next((a.out / "stage1").glob("dt=*"))
        shutil.copytree(tonight, root / "faces" / tonight.name)
        night = run_step("night", root, identity)
        results[how] = {"forget": erased, "night": night}
        print(f"index {how}: forget {erased}; the next night {night}", flush=True)
    rows = {how: differing_rows(copies[how], copies["no erasure"]) for how in ("kept", "dropped")}
    print(f"identity {identity} erased; rows of the faces left that differ from night 2 with no erasure: {rows}")
    return {"identity": identity, "differing_from_no_erasure": rows, **results}


if __name__ == "__main__":
    record.run(main, "bench.speed.forget_index")
