"""Blurred faces: how far blur moves dlib's embedding, what the chip's detail says, and what the
outlier stage flags (issue 32: faces "so blurred that no embedding of them can mean anything --
exactly the chips that bridge identities" were not flagged).

    .venv/bin/python -m bench.accuracy.wild_set MIRRORS --work /tmp/wild2      # the photos, once
    .venv/bin/python -m bench.accuracy.blurred_faces --wild /tmp/wild2 [--work /tmp/blurred]

1. **The embedder against blur.** Each face of at least 40 px that the job found in the wild
   set's photos, its chip cut as the job cuts it, then blurred by a Gaussian of sigma = a share
   of the face's width (the chip's face box is 100 px): the embedding's distance from the sharp
   chip's, the chip's ``detail`` (``facepipe.stages.align.quality``), and the share of pairs of
   blurred faces (nearly all of two people) under 0.445 -- against the sharp faces'.
2. **The job on blurred photos.** The photos, and copies with each face blurred in the photo
   (sigma 2%, 5% and 10% of its width, the face's box and 30% around it), run by the job with
   its defaults: per kind, faces of at least 40 px found and flagged, and why.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench import record

SHARES = (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1)
PHOTO_SHARES = (0.02, 0.05, 0.1)
NOT_DIGITS = r"\D"


def chips_of(out: Path, where: str = "true") -> tuple[np.ndarray, np.ndarray]:
    """The chips of an output's faces (``where`` on ``f`` and ``i``), cut as the job cut them, and their widths."""
    import cv2
    import duckdb

    from facepipe.registry import create_model
    from facepipe.stages.align.stage import align_batch, resolve_method
    from facepipe.stages.embed.stage import EmbedConfig

    cfg = EmbedConfig()
    chip = create_model(cfg.name, cfg.weights, kind="embedder").chip
    predictor = create_model("dlib_shape_predictor_5", kind="landmarks")
    rows = duckdb.sql(f"""select i.source_uri, [f.x1, f.y1, f.x2, f.y2], f.landmarks
        from read_parquet('{out}/faces/*/*.parquet') f join read_parquet('{out}/images/*/*.parquet') i
        using (image_id) where {where} order by i.source_uri, f.face_index""").fetchall()  # fmt: skip
    by: dict[str, list] = {}
    for uri, box, lm in rows:
        by.setdefault(uri, []).append((box, lm))
    chips = []
    for uri, faces in by.items():
        img = cv2.cvtColor(cv2.imread(uri), cv2.COLOR_BGR2RGB)
        boxes = np.array([b for b, _ in faces], np.float32)
        lms = np.array([lm for _, lm in faces], np.float32).reshape(-1, 5, 2)
        chips.append(align_batch([img], [boxes], [lms], chip, resolve_method(cfg.align.method, chip), predictor)[0])
    widths = np.array([b[2] - b[0] for faces in by.values() for b, _ in faces], np.float32)
    return np.concatenate(chips), widths


def against_blur(wild: Path) -> None:
    """Part 1 (module text)."""
    import cv2

    from facepipe.registry import create_model
    from facepipe.stages.align.quality import detail
    from facepipe.stages.embed.stage import EmbedConfig

    chips, _ = chips_of(wild / "out", "f.x2 - f.x1 >= 40")
    net = create_model(EmbedConfig().name, kind="embedder")
    sharp = net.embed(chips)
    print(f"{len(chips)} faces of at least 40 px\n")
    print("| blur (of the face's width) | embedding moved, median / 90% | detail, 5% / 50% / 95% | pairs under 0.445 |")
    print("|---|---|---|---|")
    for share in SHARES:
        blurred = chips if not share else np.stack([cv2.GaussianBlur(c, (0, 0), share * 100) for c in chips])
        e = net.embed(blurred)
        moved, d = np.linalg.norm(e - sharp, axis=1), detail(blurred)
        pairs = np.linalg.norm(e[:, None] - e[None], axis=2)[np.triu_indices(len(e), 1)]
        print(
            f"| {100 * share:.0f}% | {np.median(moved):.3f} / {np.percentile(moved, 90):.3f} | "
            f"{' / '.join(f'{v:.2f}' for v in np.percentile(d, [5, 50, 95]))} | {np.mean(pairs < 0.445):.4f} |"
        )
        record.numbers(
            **{f"blur {share}": [float(np.median(moved)), float(np.median(d)), float(np.mean(pairs < 0.445))]}
        )


def blurred_photos(wild: Path, dest: Path) -> None:
    """The wild set's photos and copies with each face of at least 40 px blurred in the photo."""
    import cv2
    import duckdb

    dest.mkdir(parents=True, exist_ok=True)
    rows = duckdb.sql(f"""select i.source_uri, [f.x1, f.y1, f.x2, f.y2]
        from read_parquet('{wild}/out/faces/*/*.parquet') f join read_parquet('{wild}/out/images/*/*.parquet') i
        using (image_id) where f.x2 - f.x1 >= 40""").fetchall()  # fmt: skip
    by: dict[str, list] = {}
    for uri, box in rows:
        by.setdefault(uri, []).append(box)
    for k, (uri, boxes) in enumerate(sorted(by.items())):
        img = cv2.imread(uri)
        cv2.imwrite(str(dest / f"sharp_{k:03d}.png"), img)
        for share in PHOTO_SHARES:
            out = img.copy()
            for x1, y1, x2, y2 in boxes:
                m = int(0.3 * (x2 - x1))
                a, b, c, d = max(0, int(y1) - m), int(y2) + m, max(0, int(x1) - m), int(x2) + m
                out[a:b, c:d] = cv2.GaussianBlur(img[a:b, c:d], (0, 0), share * (x2 - x1))
            cv2.imwrite(str(dest / f"blur{round(100 * share):02d}_{k:03d}.png"), out)


def the_job(wild: Path, work: Path) -> None:
    """Part 2 (module text)."""
    import duckdb

    blurred_photos(wild, work / "photos")
    out = work / "out"
    cmd = [sys.executable, "-m", "facepipe.cli", "run", str(work / "photos"), "-o", str(out), "--no-cluster"]
    subprocess.run([*cmd, "--executor", "local", "--dt", "2026-12-07", "--run-id", "blurred"], check=True)
    rows = duckdb.sql(f"""select regexp_extract(i.source_uri, '/(sharp|blur\\d+)_', 1), o.is_outlier, o.reason
        from read_parquet('{out}/faces/*/*.parquet') f join read_parquet('{out}/images/*/*.parquet') i using (image_id)
        join read_parquet('{out}/face_outliers/*/*.parquet') o using (face_id)
        where f.x2 - f.x1 >= 40""").fetchall()  # fmt: skip
    print("\n| photos | faces >= 40 px | flagged | reasons |\n|---|---|---|---|")
    for kind in sorted({r[0] for r in rows}, key=lambda k: (k != "sharp", k)):
        mine = [r for r in rows if r[0] == kind]
        flagged = [r[2] for r in mine if r[1]]
        why = ", ".join(f"{w} {flagged.count(w)}" for w in sorted(set(flagged)))
        share = "sharp" if kind == "sharp" else f"{int(re.sub(NOT_DIGITS, '', kind))}%"
        print(f"| {share} | {len(mine)} | {len(flagged)} ({100 * len(flagged) / len(mine):.1f}%) | {why} |")
        record.numbers(**{f"job, {kind}": [len(mine), len(flagged)]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wild", type=Path, required=True, help="wild_set's --work folder (its photos and output)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/blurred"))
    a = ap.parse_args()
    against_blur(a.wild)
    the_job(a.wild, a.work)


if __name__ == "__main__":
    record.run(main, "bench.accuracy.blurred_faces")
