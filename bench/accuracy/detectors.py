"""Detectors side by side: accuracy on ../shared's dev set (the `facepipe eval-detect` numbers) and
speed on the test photos.

    .venv/bin/python -m bench.accuracy.detectors [--shared ../shared]

For CenterFace and the two RetinaFace-MobileNet-0.25 checkpoints in ../shared/data/retinaface.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from bench import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("FACEPIPE_SHARED", "../shared"))
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    from facepipe.registry import create_model
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.tools import demo, evaluate

    shared = Path(a.shared) / "data"
    dev = shared / "pascal_faces_dev"
    gt, _ = evaluate.load_ground_truth(dev / "training.xml")
    models = {
        "centerface": create_model("centerface", kind="detector"),
        "retinaface mnet025_1mb": create_model(
            "retinaface", shared / "retinaface" / "mnet025_face_detector_1mb.pth", config="mnet025_1mb"
        ),
        "retinaface mnet025_relu": create_model(
            "retinaface", shared / "retinaface" / "mnet025_pytorch_retinaface_3c31dcd.pth", config="mnet025_relu"
        ),
    }
    images = [decode_image(p.read_bytes(), DecodeConfig()).pixels for p in demo.photos().values()]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"pascal_faces_dev: {len(gt)} images, {sum(len(g.boxes) for g in gt.values())} faces; speed on the "
        f"{len(images)} test photos at long side 640"
    )
    for name, det in models.items():
        found = evaluate.detect_for_eval(det, dev, sorted(gt))
        for rule in ("iou", "dlib"):
            print(f"{name:26s} {evaluate.evaluate(gt, found, rule, 0.5).row()}")
        det.detect(images[:2])
        t = time.perf_counter()
        for _ in range(a.repeat):
            det.detect(images, batch_size=8)
        print(f"{name:26s} detect {1e3 * (time.perf_counter() - t) / (a.repeat * len(images)):.1f} ms/image")


if __name__ == "__main__":
    record.run(main, "bench.accuracy.detectors")
