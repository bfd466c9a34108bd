"""The outlier stage on group, crowd and collage photos, every detection labelled by hand.

    .venv/bin/python -m bench.accuracy.group_outliers MIRRORS [--work DIR]

``MIRRORS``: a folder of git clones (or the ``fetch`` tool's snapshots, ``OWNER+NAME``) of the
repositories ``bench/data/group_outliers.json`` names, read at its pinned commits (insightface's
t1.jpg comes from the demo photos). The job runs with its defaults on the 18 photos; each of its
detections is matched to a labelled box (IoU >= 0.5) and the table says, per label (usable face,
unusable, non-face), how many the stage flagged and why (``face_outliers.reason``), for all faces
and for faces at least 40 px wide (those the identity stage clusters). The evaluation set of
``outlier_scores`` is mostly frontal subjects; background faces of group and crowd photos, where
an archive has many of its faces, are here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from bench import record
from bench.accuracy.labelled_photos import git

LABELS = Path(__file__).resolve().parents[1] / "data" / "group_outliers.json"


def build(mirrors: Path, dest: Path) -> None:
    """The labelled photos under ``dest``, named as the labels name them."""
    from facepipe.tools.demo import photos

    dest.mkdir(parents=True, exist_ok=True)
    for name, s in json.loads(LABELS.read_text())["sources"].items():
        if s["repo"].startswith("demo photos"):
            (dest / name).write_bytes(photos()[s["path"]].read_bytes())
            continue
        repo = mirrors / s["repo"].replace("/", "+")
        repo = repo / "repo" if (repo / "repo").exists() else repo
        (dest / name).write_bytes(git(repo, "show", f"{s['commit']}:{s['path']}", binary=True))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mirrors", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/group_outliers"))
    a = ap.parse_args()
    import duckdb

    build(a.mirrors, a.work / "photos")
    out = a.work / "out"
    cmd = [sys.executable, "-m", "facepipe.cli", "run", str(a.work / "photos"), "--output", str(out), "--no-cluster"]
    subprocess.run([*cmd, "--executor", "local", "--dt", "2026-12-06", "--run-id", "groups"], check=True)
    rows = duckdb.sql(f"""
        select regexp_extract(i.source_uri, '[^/]+$'), [f.x1, f.y1, f.x2, f.y2], o.is_outlier, o.reason
        from read_parquet('{out}/faces/*/*.parquet') f
        join read_parquet('{out}/images/*/*.parquet') i using (image_id)
        join read_parquet('{out}/face_outliers/*/*.parquet') o using (face_id)""").fetchall()
    labelled = json.loads(LABELS.read_text())["detections"]
    counts: dict[tuple[str, bool], Counter] = {}
    unmatched = 0
    for photo, box, flagged, reason in rows:
        box = np.asarray(box)
        match = [d for d in labelled if d["photo"] == photo and iou(box, np.asarray(d["box"])) >= 0.5]
        if not match:
            unmatched += 1
            continue
        for wide in (False, True):
            if wide and box[2] - box[0] < 40:
                continue
            c = counts.setdefault((match[0]["label"], wide), Counter())
            c["n"] += 1
            c["flagged"] += bool(flagged)
            c[reason or "-"] += bool(flagged)
    print(f"{len(rows)} detections, {len(labelled)} labelled, {unmatched} matched no label")
    print("| label | faces | flagged | share | reasons |\n|---|---|---|---|---|")
    for (label, wide), c in sorted(counts.items()):
        why = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in ("n", "flagged", "-") and v)
        name = f"{label}{' (>= 40 px)' if wide else ''}"
        print(f"| {name} | {c['n']} | {c['flagged']} | {100 * c['flagged'] / c['n']:.1f}% | {why} |")
        record.numbers(**{name: dict(c)})


if __name__ == "__main__":
    record.run(main, "bench.accuracy.group_outliers")
