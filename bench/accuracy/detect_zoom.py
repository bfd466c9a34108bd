"""Could a zoomed second pass on weak candidates find the small faces a 640 px pass misses?

    .venv/bin/python -m bench.accuracy.detect_zoom --archive /tmp/benchA [--long-side 640] [--low 0.05]

On the benchmark archive (testbed/pasted.py; build it with bench/speed/e2e.py or testbed/pasted.py),
CenterFace runs at ``--long-side`` with its score threshold lowered to ``--low``. For every
pasted face missed at the default 0.5 it reports whether some detection between ``--low`` and 0.5
lies on it (dlib's rule: IoU >= 0.3 or centred inside) -- the only faces a zoom on candidates
could recover -- and how many such weak candidates an image has (the zoom's cost).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench import record


def _found(truth: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    from facepipe.tools.evaluate import iou_matrix

    if len(boxes) == 0 or len(truth) == 0:
        return np.zeros(len(truth), bool)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (
        (cx[None] >= truth[:, :1])
        & (cx[None] <= truth[:, 2:3])
        & (cy[None] >= truth[:, 1:2])
        & (cy[None] <= truth[:, 3:4])
    )
    return ((iou_matrix(truth, boxes) >= 0.3) | inside).any(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archive", default="/tmp/facepipe-bench")
    ap.add_argument("--long-side", type=int, default=640)
    ap.add_argument("--low", type=float, default=0.05)
    a = ap.parse_args()
    from facepipe.registry import create_model
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.stages.detect.stage import DetectConfig, detect_images

    det = create_model("centerface", kind="detector")
    truth = json.loads((Path(a.archive) / "truth.json").read_text())
    faces = missed = recoverable = 0
    candidates = []
    for name, boxes in sorted(truth.items()):
        d = decode_image((Path(a.archive) / "images" / name).read_bytes(), DecodeConfig(long_side=a.long_side))
        s = d.pixels.shape[1] / d.width
        r = detect_images(det, [d.pixels], [(s, s)], [(d.width, d.height)], DetectConfig(score_threshold=a.low))[0]
        t = np.array(boxes, np.float32).reshape(-1, 4)
        strong, weak = _found(t, r.boxes[r.scores >= 0.5]), _found(t, r.boxes[r.scores < 0.5])
        faces += len(t)
        missed += int((~strong).sum())
        recoverable += int((~strong & weak).sum())
        candidates.append(int((r.scores < 0.5).sum()))
    print(
        f"long side {a.long_side}, candidates >= {a.low}: {faces} pasted faces, {missed} missed at 0.5, "
        f"{recoverable} of them with a weak candidate on them, {missed - recoverable} with none; "
        f"weak candidates per image: mean {np.mean(candidates):.1f}, max {max(candidates)}"
    )


if __name__ == "__main__":
    record.run(main, "bench.accuracy.detect_zoom")
