"""Detector input resolution against recall and false positives on the benchmark archive.

    .venv/bin/python -m bench.accuracy.detect_resolution --archive /tmp/benchA [--detector retinaface \
        --detector-weights ../shared/data/retinaface/mnet025_face_detector_1mb.pth --detector-config mnet025_1mb] \
        [--long-side 640] [--min-face 40] [--min-face-input 24]

Decode + detect only, in one process with one torch thread (the unit a Ray worker gets on this
box), at the job's decode settings (``DecodeConfig(min_face=...)``). For every pasted face
(testbed/pasted.py's ground truth) its best-scoring detection is a true positive (dlib's rule:
IoU >= 0.3 or centred inside); every other detection is a false positive -- which includes real
partial faces at the edges of the pasted crops. Prints images/s, the mean detector input in MP,
recall at 0.5, and true/false positives at score thresholds 0.3-0.95.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archive", default="/tmp/facepipe-bench")
    ap.add_argument("--detector", default="centerface")
    ap.add_argument("--detector-weights", default=None)
    ap.add_argument("--detector-config", default=None)
    ap.add_argument("--long-side", type=int, default=640)
    ap.add_argument("--min-face", type=int, default=0)
    ap.add_argument("--min-face-input", type=int, default=24)
    a = ap.parse_args()
    import torch

    from facepipe.registry import create_model
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.stages.detect.stage import DetectConfig, detect_images
    from facepipe.tools.evaluate import iou_matrix

    torch.set_num_threads(1)
    det = create_model(a.detector, a.detector_weights, kind="detector", config=a.detector_config)
    cfg = DecodeConfig(long_side=a.long_side, min_face=a.min_face, min_face_input=a.min_face_input)
    root = Path(a.archive)
    truth = json.loads((root / "truth.json").read_text())
    tp: list[float] = []
    fp: list[float] = []
    seconds = pixels = 0.0
    for name, boxes in sorted(truth.items()):
        data = (root / "images" / name).read_bytes()
        t0 = time.perf_counter()
        d = decode_image(data, cfg)
        (r,) = detect_images(
            det, [d.pixels], [(d.scale_x, d.scale_y)], [(d.width, d.height)], DetectConfig(score_threshold=0.3)
        )
        seconds += time.perf_counter() - t0
        pixels += d.pixels.shape[0] * d.pixels.shape[1]
        t = np.array(boxes, np.float32).reshape(-1, 4)
        hit = np.zeros((len(t), len(r.boxes)), bool)
        if len(t) and len(r.boxes):
            cx, cy = (r.boxes[:, 0] + r.boxes[:, 2]) / 2, (r.boxes[:, 1] + r.boxes[:, 3]) / 2
            inside = (
                (cx[None] >= t[:, :1]) & (cx[None] <= t[:, 2:3]) & (cy[None] >= t[:, 1:2]) & (cy[None] <= t[:, 3:4])
            )
            hit = (iou_matrix(t, r.boxes) >= 0.3) | inside
        best = {int(np.flatnonzero(h)[np.argmax(r.scores[h])]) for h in hit if h.any()}
        tp += [float(s) for j, s in enumerate(r.scores) if j in best]
        fp += [float(s) for j, s in enumerate(r.scores) if j not in best]
    n = sum(map(len, truth.values()))
    tpa, fpa = np.array(tp), np.array(fp)
    print(
        f"{det.model_id}, long side {cfg.long_side}, min face {a.min_face} -> {a.min_face_input} px: "
        f"{len(truth) / seconds:.2f} images/s decode+detect (1 thread), mean input {pixels / len(truth) / 1e6:.2f} MP, "
        f"recall at 0.5 {int((tpa >= 0.5).sum())}/{n} = {(tpa >= 0.5).sum() / n:.3f}"
    )
    print("  threshold  " + "  ".join(f"{th:>5}" for th in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)))
    print("  found      " + "  ".join(f"{int((tpa >= th).sum()):>5}" for th in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)))
    print("  false pos. " + "  ".join(f"{int((fpa >= th).sum()):>5}" for th in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)))


if __name__ == "__main__":
    record.run(main, "bench.accuracy.detect_resolution")
