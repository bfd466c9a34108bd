"""Shared ground for the labelled photo sets (``portraits_set``, ``wild_set``): photos on disk,
labelled by the set's own source (a path, a list of pairs), never by their faces, run through
``facepipe run`` with its defaults, the largest face of each photo kept as its person's, and the
identity methods compared over face orders and thresholds."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import record
from bench.accuracy.cluster_real import FIRST_PASS, RealSet, over_orders

#: face crops (gray, 32x32, normalised) of one person correlating at least this much: one photo
SAME_PHOTO = 0.9
CHINESE_WHISPERS = "chinese_whispers (order as given)"


def git(repo: Path, *args: str, binary: bool = False) -> str | bytes:
    """``git -C repo ARGS``'s output (a source repository's files at a pinned commit)."""
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return out.stdout if binary else out.stdout.decode()


#: writes a set's photos under ``work/images`` from its source and returns path -> person
Writer = Callable[[Path, Path], dict[Path, str]]


def built_set(name: str, source: Path, work: Path, write_archive: Writer, rebuild: bool = False) -> RealSet:
    """The labelled faces of a set (its photos written by ``write_archive(source, work)``, then
    :func:`extract`, :func:`main_faces`, :func:`labelled_set`), cached in ``work/NAME.npz``."""
    cache = work / f"{name}.npz"
    if cache.exists() and not rebuild:
        return load(cache)
    labels = write_archive(source, work)
    s = labelled_set(labels, main_faces(extract(work / "images", work / "out")))
    save(s, cache)
    return s


def main(name: str, source_help: str, write_archive: Writer) -> None:
    """A set's bench: build it (cached) and :func:`compare` the methods on it."""
    from facepipe.model_files import cache_dir

    ap = argparse.ArgumentParser()
    ap.add_argument("source", type=Path, help=source_help)
    ap.add_argument("--work", type=Path, default=cache_dir(name))
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--curve", default="0.35,0.4,0.45,0.5,0.55,0.6")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    s = built_set(name, args.source, args.work, write_archive, args.rebuild)
    compare(name, s, args.orders, [float(t) for t in args.curve.split(",")])


def extract(images: Path, out: Path) -> Path:
    """``facepipe run`` over ``images`` with the job's defaults (local executor, no scoring)."""
    if not (out / "_runs").exists():
        cmd = [sys.executable, "-m", "facepipe.cli", "run", str(images), "-o", str(out), "--run-id", "labelled",
               "--dt", "2026-12-06", "--executor", "local", "--no-score"]  # fmt: skip
        subprocess.run(cmd, check=True)
    return out


def main_faces(out: Path) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """Photo path -> (box, embedding) of its largest face."""
    import duckdb

    rows = duckdb.sql(
        f"""select i.source_uri, f.x1, f.y1, f.x2, f.y2, f.embedding
            from read_parquet('{out}/faces/*/*.parquet') f
            join read_parquet('{out}/images/*/*.parquet') i using (image_id)
            qualify row_number() over (
                partition by f.image_id order by (f.x2 - f.x1) * (f.y2 - f.y1) desc, f.face_index
            ) = 1"""
    ).fetchall()
    return {
        Path(u): (np.array([x1, y1, x2, y2], np.float32), np.asarray(e, np.float32)) for u, x1, y1, x2, y2, e in rows
    }


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


def labelled_set(labels: dict[Path, str], faces: dict[Path, tuple[np.ndarray, np.ndarray]]) -> RealSet:
    """The main face of each labelled photo; the same photo twice under one label (a thumbnail
    and its large version, a re-encode: face crops correlating at :data:`SAME_PHOTO`) kept once,
    the largest. The same photo under two labels makes them one person (:func:`same_photo_labels`)."""
    labels = same_photo_labels(labels, faces)
    by_person: dict[str, list] = {}
    for path, person in labels.items():
        if path in faces:
            by_person.setdefault(person, []).append((path, *faces[path]))
    xs, names, ids, widths = [], [], [], []
    for person, photos in sorted(by_person.items()):
        photos.sort(key=lambda t: (-float((t[1][2] - t[1][0]) * (t[1][3] - t[1][1])), str(t[0])))
        kept: list[np.ndarray] = []
        for path, box, emb in photos:
            crop = _crop(path, box)
            if crop is None or any(float(crop @ k) >= SAME_PHOTO for k in kept):
                continue
            kept.append(crop)
            xs.append(emb)
            names.append(person)
            ids.append(f"{person}/{path.name}")
            widths.append(float(box[2] - box[0]))
    return RealSet(np.stack(xs), np.array(names), np.array(ids), np.array(widths, np.float32))


def same_photo_labels(labels: dict[Path, str], faces: dict[Path, tuple[np.ndarray, np.ndarray]]) -> dict[Path, str]:
    """``labels`` with the labels that share a photo joined (the first label, sorted, names the
    group): a source showing one photo for two ids says they are one person (TheyWorkForYou has
    a few, e.g. one person's two records). One photo: embeddings within 0.1 and face crops
    correlating at 0.98 or more."""
    paths = [p for p in sorted(labels) if p in faces]
    x = np.stack([faces[p][1] for p in paths])
    sq = (x * x).sum(1)
    parent = {lab: lab for lab in labels.values()}

    def root(a: str) -> str:
        while parent[a] != a:
            a = parent[a]
        return a

    for i in range(len(paths)):
        near = np.flatnonzero(sq + sq[i] - 2 * x @ x[i] < 0.01)
        for j in near[near > i]:
            a, b = root(labels[paths[i]]), root(labels[paths[j]])
            if a == b:
                continue
            ca, cb = _crop(paths[i], faces[paths[i]][0]), _crop(paths[j], faces[paths[j]][0])
            if ca is not None and cb is not None and float(ca @ cb) >= 0.98:
                parent[max(a, b)] = min(a, b)
    return {p: root(lab) for p, lab in labels.items()}


def save(s: RealSet, path: Path) -> None:
    np.savez(path, x=s.x, labels=s.labels, image_ids=s.image_ids, widths=s.widths)


def load(path: Path) -> RealSet:
    z = np.load(path, allow_pickle=False)
    return RealSet(z["x"], z["labels"], z["image_ids"], z["widths"])


def describe(s: RealSet) -> str:
    _, counts = np.unique(s.labels, return_counts=True)
    return (
        f"{len(s.x)} faces of {len(counts)} people ({int((counts >= 2).sum())} with 2+ photos, "
        f"{int((counts >= 3).sum())} with 3+); face width median {np.median(s.widths):.0f} px"
    )


def compare(name: str, s: RealSet, orders: int, curve: list[float]) -> list[str]:
    """facepipe's clustering (defaults, then each threshold of ``curve``) and dlib's Chinese
    Whispers (0.5, then ``curve``) over ``orders`` face orders, on the faces the job clusters
    (at least ``ClusterConfig.min_face`` wide): one table row each, also in the bench record."""
    from facepipe.stages.cluster.stage import ClusterConfig

    default = ClusterConfig()
    wide = s.widths >= default.min_face
    clustered = RealSet(s.x[wide], s.labels[wide], s.image_ids[wide], s.widths[wide])
    lines = [
        f"{name}: {describe(s)}",
        f"clustered (at least {default.min_face} px wide, as the job): {describe(clustered)}",
        "",
    ]
    lines += ["| method | threshold | BCubed P (worst / mean) | R | F | orders with a merge | distinct results |"]
    lines += ["|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    from facepipe.stages.cluster.stage import cluster_full

    link = cluster_full(clustered.x.astype(np.float32), default, image_ids=clustered.image_ids)[1]
    chose = f"chose {link.value}" + (f", raised from the law's {link.law}" if link.law else "")
    rows = [
        ("facepipe (defaults)", default.method, default.threshold, None),
        ("dlib: Chinese Whispers", CHINESE_WHISPERS, 0.5, None),
    ]
    rows += [
        (f"facepipe, --cluster-threshold auto ({chose})", default.method, "auto", None),
        ("facepipe, the law's cut (--cluster-fdr 0)", default.method, "auto", 0.0),
        ("facepipe, the law's cut, first pass only (--no-cluster-second-pass --cluster-fdr 0)", FIRST_PASS, "auto", 0),
    ]
    rows += [("facepipe", default.method, t, None) for t in curve] + [
        ("Chinese Whispers", CHINESE_WHISPERS, t, None) for t in curve
    ]
    for title, method, t, fdr in rows:
        r = over_orders(clustered, method, t, orders, default.k, fdr=fdr)  # the stage's graph for every method
        record.numbers(**{f"{name}: {title} @ {t}": r})
        lines.append(
            f"| {title} | {t} | {r['worst_bp']:.3f} / {r['bp']:.3f} | {r['br']:.3f} | {r['bf']:.3f} | "
            f"{r['merged_orders']} | {r['distinct']} |"
        )
        print(lines[-1], flush=True)
    lines += law_check(clustered)
    print("\n".join(lines[-9:]), flush=True)
    return lines


def law_check(s: RealSet, cuts: tuple[float, ...] = (0.38, 0.40, 0.42, 0.45, 0.48, 0.50)) -> list[str]:
    """The law ``auto`` fits to random pairs (no labels) against the labelled different-person
    pairs: the measured share under each cut, the law's, and the law with the spread of the
    upper side instead (the first version of ``auto``)."""
    from statistics import NormalDist

    from facepipe.stages.cluster.threshold import auto_threshold

    law = auto_threshold(s.x)
    d = np.linalg.norm(s.x[:, None] - s.x[None], axis=2)
    a, b = np.triu_indices(len(s.x), 1)
    diff = d[a, b][s.labels[a] != s.labels[b]]
    mu = law.mu
    upper = diff[diff > mu]  # the labelled pairs' upper side stands in for the random pairs'
    up = float(np.sqrt(np.mean((upper - mu) ** 2)))
    lines = ["", f"the law from random pairs: median {law.mu}, lower-side spread {law.sigma} (upper side {up:.4f})"]
    lines += ["| distance under | measured (different people) | law | upper-side law |", "|---|---|---|---|"]
    rows = [(c, (diff < c).mean(), NormalDist(mu, law.sigma).cdf(c), NormalDist(mu, up).cdf(c)) for c in cuts]
    lines += [f"| {c:.2f} | {m:.1e} | {p:.1e} | {q:.1e} |" for c, m, p, q in rows]
    record.numbers(law_check={"mu": law.mu, "sigma": law.sigma, "upper_sigma": up, "under": rows})
    return lines
