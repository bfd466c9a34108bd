"""Identities at thousands of real people: the portraits of UK parliamentarians that
TheyWorkForYou has shown over twenty years -- a harder labelled set than ``cluster_real``'s.

    .venv/bin/python -m bench.accuracy.portraits_set MIRROR [--orders 20] [--work DIR]

``MIRROR``: a git clone (or the ``fetch`` tool's snapshot) of github.com/mysociety/theyworkforyou;
the set is read at commit :data:`COMMIT`, so it is the same for everyone. Every version ever
committed of ``www/docs/images/mps/PERSON.*`` and ``mpsL/PERSON.*`` is a photo of the person with
that id: a new official portrait replaced an old one over the years (2004-2026), so one person
has photos taken years apart -- different photos, not augmentations of one. Thousands of people
are in it, most with one photo (the look-alikes a clustering must not merge), about a thousand
with two or more (the same person it must not split). The photos are small (portrait
thumbnails, 49x59 to 160x120): an archive's small faces. Not LFW, not CelebA.

How the set is built (cached under ``--work``): every blob is written as
``images/PERSON/SHA.EXT``; ``facepipe run`` with its defaults (the job's own detector, landmarks,
chip and embedder) extracts the faces; the largest face of each photo is the person's. The same
photo committed twice (a thumbnail and its large version, a re-encode) is one photo: within a
person, photos whose face crops correlate at :data:`SAME_PHOTO` or more are collapsed to the
largest. Labels come from the path, never from the faces.

Prints, over ``--orders`` random orders of the faces, BCubed precision (worst and mean), recall
and F of facepipe's clustering with its defaults and of dlib's Chinese Whispers at 0.5 (the
plain dlib pipeline: ``face_recognition``'s threshold), then each method's threshold curve.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench import record
from bench.accuracy.cluster_real import RealSet, over_orders
from facepipe.model_files import cache_dir

REPO = "mysociety/theyworkforyou"
COMMIT = "4a5b59cadb59f96e4e05d268b41a1842e1aade82"
FOLDERS = ("www/docs/images/mps", "www/docs/images/mpsL")
#: face crops (gray, 32x32, normalised) of one person correlating at least this much: one photo
SAME_PHOTO = 0.9


def _git(mirror: Path, *args: str, binary: bool = False):
    out = subprocess.run(["git", "-C", str(mirror), *args], check=True, capture_output=True)
    return out.stdout if binary else out.stdout.decode()


def write_archive(mirror: Path, root: Path) -> int:
    """Every committed version of the portraits as ``root/images/PERSON/SHA.EXT``; returns how many."""
    n = 0
    for line in _git(mirror, "rev-list", "--objects", COMMIT, "--", *FOLDERS).splitlines():
        sha, _, path = line.partition(" ")
        name = path.rsplit("/", 1)[-1]
        person, _, ext = name.partition(".")
        if not (person.isdigit() and ext in ("jpg", "jpeg", "png")) or not path.startswith(FOLDERS):
            continue
        out = root / "images" / person / f"{sha[:12]}.{ext}"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(_git(mirror, "cat-file", "blob", sha, binary=True))
        n += 1
    return n


def extract(root: Path) -> Path:
    """``facepipe run`` over the archive with the job's defaults (local executor, no scoring)."""
    out = root / "out"
    if not (out / "_runs").exists():
        cmd = [sys.executable, "-m", "facepipe.cli", "run", str(root / "images"), "-o", str(out), "--run-id",
               "portraits", "--dt", "2026-12-06", "--executor", "local", "--no-score"]  # fmt: skip
        subprocess.run(cmd, check=True)
    return out


def _crop(path: Path, box: np.ndarray) -> np.ndarray | None:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    c = img[max(0, y1) : max(y1 + 1, y2), max(0, x1) : max(x1 + 1, x2)]
    if c.size == 0:
        return None
    c = cv2.resize(c, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    c -= c.mean()
    return c / (np.linalg.norm(c) + 1e-6)


def portraits_set(mirror: Path, work: Path, rebuild: bool = False) -> RealSet:
    """The labelled faces (see the module doc), cached in ``work/portraits.npz``."""
    cache = work / "portraits.npz"
    if cache.exists() and not rebuild:
        z = np.load(cache, allow_pickle=False)
        return RealSet(z["x"], z["labels"], z["image_ids"], z["widths"])
    import duckdb

    print(f"{write_archive(mirror, work)} photos written", flush=True)
    out = extract(work)
    rows = duckdb.sql(
        f"""select i.source_uri, f.x1, f.y1, f.x2, f.y2, f.embedding
            from read_parquet('{out}/faces/*/*.parquet') f join read_parquet('{out}/images/*/*.parquet') i using (image_id)
            qualify row_number() over (partition by f.image_id order by (f.x2 - f.x1) * (f.y2 - f.y1) desc, f.face_index) = 1
            order by i.source_uri"""
    ).fetchall()
    people: dict[str, list] = {}
    for uri, x1, y1, x2, y2, emb in rows:
        p = Path(uri)
        people.setdefault(p.parent.name, []).append((p, np.array([x1, y1, x2, y2], np.float32), emb))
    xs, labels, ids, widths = [], [], [], []
    for person, photos in sorted(people.items()):
        photos.sort(key=lambda t: -float((t[1][2] - t[1][0]) * (t[1][3] - t[1][1])))  # largest first
        kept: list[np.ndarray] = []
        for path, box, emb in photos:
            crop = _crop(path, box)
            if crop is None or any(float(crop @ k) >= SAME_PHOTO for k in kept):
                continue  # the same photo again (a thumbnail, a re-encode)
            kept.append(crop)
            xs.append(np.asarray(emb, np.float32))
            labels.append(person)
            ids.append(f"{person}/{path.name}")
            widths.append(float(box[2] - box[0]))
    s = RealSet(np.stack(xs), np.array(labels), np.array(ids), np.array(widths, np.float32))
    np.savez(cache, x=s.x, labels=s.labels, image_ids=s.image_ids, widths=s.widths)
    return s


def describe(s: RealSet) -> str:
    _, counts = np.unique(s.labels, return_counts=True)
    return (
        f"{len(s.x)} faces of {len(counts)} people ({int((counts >= 2).sum())} with 2+ photos, "
        f"{int((counts >= 3).sum())} with 3+); face width median {np.median(s.widths):.0f} px"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mirror", type=Path, help=f"a clone of github.com/{REPO} holding commit {COMMIT[:10]}")
    ap.add_argument("--work", type=Path, default=cache_dir("portraits"))
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--curve", default="0.35,0.4,0.45,0.5,0.55,0.6")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    s = portraits_set(args.mirror, args.work, args.rebuild)
    from facepipe.stages.cluster.stage import ClusterConfig

    default = ClusterConfig()
    wide = s.widths >= default.min_face
    clustered = RealSet(s.x[wide], s.labels[wide], s.image_ids[wide], s.widths[wide])
    lines = [f"the set: {describe(s)}", f"clustered (faces at least {default.min_face} px wide, as the job): {describe(clustered)}", ""]
    rows = [("facepipe (defaults)", default.method, default.threshold), ("dlib: Chinese Whispers", "chinese_whispers (order as given)", 0.5)]
    rows += [(f"facepipe at {t}", default.method, float(t)) for t in args.curve.split(",")]
    rows += [(f"Chinese Whispers at {t}", "chinese_whispers (order as given)", float(t)) for t in args.curve.split(",")]
    head = "| method | threshold | BCubed P (worst / mean) | R | F | orders with a merge | distinct results |"
    lines += [head, "|---|---|---|---|---|---|---|"]
    for title, method, t in rows:
        r = over_orders(s, method, t, args.orders, min_face=default.min_face)
        record.numbers(**{f"{title}@{t}": r})
        lines.append(
            f"| {title} | {t} | {r['worst_bp']:.3f} / {r['bp']:.3f} | {r['br']:.3f} | {r['bf']:.3f} | "
            f"{r['merged_orders']} | {r['distinct']} |"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    record.run(main, "bench.accuracy.portraits_set")
