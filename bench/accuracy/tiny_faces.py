"""Faces a few pixels wide: which landmarks to cut their chips on, and how far apart the two
landmark estimates lie at each width (issue 32: collage faces of 13-19 px, labelled usable, are
flagged ``unusable chip`` for their landmark offsets).

    .venv/bin/python -m bench.accuracy.wild_set MIRRORS --work /tmp/wild2                 # the photos, once
    .venv/bin/python -m bench.accuracy.group_outliers MIRRORS --work /tmp/group_outliers  # the group photos' run
    .venv/bin/python -m bench.accuracy.tiny_faces --wild /tmp/wild2 --groups /tmp/group_outliers

1. **Shrunk photos.** Each main face of the wild set at least 80 px wide, its photo shrunk (area
   averaging) so the face is ``W`` px wide, detected again by the default detector (as the job
   detects a photo that small: at its own size), the face matched to the shrunk original box, its
   chip cut on dlib's 5-point shape predictor (the job's default, ``dlib_sp5``) and on the
   detector's own landmarks (``dlib_landmarks``), and embedded. Printed per width: faces found,
   the norm of the 10 landmark offsets (the outlier stage's DROCC input: the detector's landmarks
   against the predictor's fit, in template units), and per method how far the embedding moved
   from the full-size face's and the share whose nearest face among the *other* photos'
   full-size faces is the same person (rank-1).
2. **The group photos' small faces** (``group_outliers``' run and labels): each labelled face under
   40 px, its offsets against the shrunk faces' 90th percentile at the nearest width, flagged or
   not and why.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench import record

WIDTHS = (12, 14, 16, 18, 20, 24, 28, 32, 40, 56, 80)
METHODS = ("dlib_sp5", "dlib_landmarks")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    from bench.accuracy.group_outliers import iou

    return iou(np.asarray(a, np.float64), np.asarray(b, np.float64))


def _shrunk_face(img: np.ndarray, box: np.ndarray, f: float, models: dict) -> tuple[np.ndarray, object] | None:
    """The photo shrunk by ``f``, and the detection there matching the shrunk ``box`` (IoU >= 0.4)."""
    import cv2

    from facepipe.stages.detect.stage import detect_images

    small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    side = models["decode"].detector_long_side(w, h)
    s = side / max(w, h) if side else 1.0
    seen = small if s == 1.0 else cv2.resize(small, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    d = detect_images(models["detector"], [seen], [(s, s)], [(w, h)], models["detect"])[0]
    ious = [_iou(b, np.asarray(box) * f) for b in d.boxes]
    if not ious or max(ious) < 0.4:
        return None
    j = int(np.argmax(ious))
    return small, (d.boxes[j : j + 1], d.landmarks[j : j + 1].reshape(1, 5, 2))


def _models() -> dict:
    from facepipe.registry import create_model
    from facepipe.stages.decode import DecodeConfig
    from facepipe.stages.detect.stage import DetectConfig
    from facepipe.stages.embed.stage import EmbedConfig

    net = create_model(EmbedConfig().name, kind="embedder")
    return {"net": net, "predictor": create_model("dlib_shape_predictor_5", kind="landmarks"),
            "detector": create_model(DetectConfig().name, kind="detector"), "detect": DetectConfig(),
            "decode": DecodeConfig()}  # fmt: skip


def _one_face(img: np.ndarray, box: np.ndarray, width: float, models: dict) -> dict:
    """Per width: (offset norm, {method: embedding}) of the face shrunk to it, or None where not found."""
    from facepipe.stages.align.quality import landmark_offsets
    from facepipe.stages.align.stage import align_batch, fit_points

    out = {}
    for w in WIDTHS:
        found = _shrunk_face(img, box, w / width, models)
        if found is None:
            out[w] = None
            continue
        small, (b, lm) = found
        fit = fit_points(small, b, lm, "dlib_sp5", models["predictor"])
        off = float(np.linalg.norm(landmark_offsets(lm, fit.points, fit.template, fit.landmark_template)))
        chips = {m: align_batch([small], [b], [lm], models["net"].chip, m, models["predictor"])[0] for m in METHODS}
        out[w] = (off, {m: models["net"].embed(c)[0] for m, c in chips.items()})
    return out


def shrunk(wild: Path) -> dict[int, np.ndarray]:
    """Part 1 (module text); returns the offset norms found per width."""
    import cv2

    from bench.accuracy.labelled_photos import load, main_faces

    s = load(wild / "wild.npz")
    faces = {p.name: (p, b) for p, (b, _) in main_faces(wild / "out").items()}
    keep = np.flatnonzero(s.widths >= 80)
    models = _models()
    per_face = []
    for i in keep:
        path, box = faces[s.image_ids[i].split("/", 1)[1]]
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        per_face.append(_one_face(img, np.asarray(box), float(s.widths[i]), models))
    x, lab = s.x[keep], s.labels[keep]
    print(f"{len(keep)} main faces of at least 80 px, shrunk\n")
    print("| width | found | offsets 10% / 50% / 90% | method | moved median / 90% | rank-1 |")
    print("|---|---|---|---|---|---|")
    offsets = {}
    for w in WIDTHS:
        ok = np.array([f[w] is not None for f in per_face])
        offsets[w] = np.array([f[w][0] for f in per_face if f[w] is not None])
        q = " / ".join(f"{v:.3f}" for v in np.quantile(offsets[w], [0.1, 0.5, 0.9]))
        for m in METHODS:
            e = np.stack([f[w][1][m] for f in per_face if f[w] is not None])
            moved = np.linalg.norm(e - x[ok], axis=1)
            d = np.linalg.norm(e[:, None] - x[None], axis=2)
            d[np.arange(len(e)), np.flatnonzero(ok)] = np.inf  # not its own photo
            rank1 = float(np.mean(lab[d.argmin(1)] == lab[ok]))
            head = f"| {w} | {ok.sum()} | {q}" if m == METHODS[0] else "| | |"
            print(f"{head} | {m} | {np.median(moved):.3f} / {np.quantile(moved, 0.9):.3f} | {rank1:.3f} |")
            record.numbers(**{f"{w} px, {m}": [int(ok.sum()), float(np.median(moved)), rank1]})
        record.numbers(**{f"{w} px offsets 10/50/90%": np.quantile(offsets[w], [0.1, 0.5, 0.9]).tolist()})
    return offsets


def group_small_faces(groups: Path, offsets: dict[int, np.ndarray]) -> None:
    """Part 2 (module text)."""
    import duckdb

    from bench.accuracy.group_outliers import LABELS

    out = groups / "out"
    rows = duckdb.sql(f"""select regexp_extract(i.source_uri, '[^/]+$'), [f.x1, f.y1, f.x2, f.y2], f.landmark_offsets,
            o.is_outlier, o.reason
        from read_parquet('{out}/faces/*/*.parquet') f join read_parquet('{out}/images/*/*.parquet') i using (image_id)
        join read_parquet('{out}/face_outliers/*/*.parquet') o using (face_id) where f.x2 - f.x1 < 40
        order by f.x2 - f.x1""").fetchall()  # fmt: skip
    labelled = json.loads(LABELS.read_text())["detections"]
    print("\n| group photo face | label | width | offsets | shrunk faces' 90% there | flagged |")
    print("|---|---|---|---|---|---|")
    for photo, box, off, flagged, reason in rows:
        match = [d["label"] for d in labelled if d["photo"] == photo and _iou(box, d["box"]) >= 0.5]
        w = box[2] - box[0]
        near = min(WIDTHS, key=lambda v: abs(v - w))
        p90 = float(np.quantile(offsets[near], 0.9))
        print(f"| {photo} | {match[0] if match else '-'} | {w:.1f} | {np.linalg.norm(off):.3f} | {p90:.3f} "
              f"| {reason if flagged else '-'} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wild", type=Path, required=True, help="wild_set's --work folder (its photos and output)")
    ap.add_argument("--groups", type=Path, help="group_outliers' --work folder (after its run)")
    a = ap.parse_args()
    offsets = shrunk(a.wild)
    if a.groups:
        group_small_faces(a.groups, offsets)


if __name__ == "__main__":
    record.run(main, "bench.accuracy.tiny_faces")
