"""Detector forward passes on CPU: milliseconds per image at batch 1 and batch 8, one torch thread.

    .venv/bin/python -m bench.speed.detect_batch [--size 480x640] [--repeat 5]

Random pixels (the cost of these networks does not depend on what the image shows), each model's
own input layout (channels-last, as ``FaceDetector.to_input`` gives it). Decides
``FaceDetector.cpu_batch_pixels``: a model slower per image batched caps its CPU passes.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench import record
from facepipe.registry import create_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="480x640")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    h, w = map(int, a.size.split("x"))
    torch.set_num_threads(1)
    for name in ("yunet", "centerface"):
        model = create_model(name, kind="detector")
        for batch in (1, 8):
            x = (torch.rand(batch, 3, h, w) * 255).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                model(x)
                t = time.perf_counter()
                for _ in range(a.repeat):
                    model(x)
            ms = (time.perf_counter() - t) / a.repeat / batch * 1000
            print(f"{name:10s} {h}x{w} batch {batch}: {ms:6.1f} ms/image")


if __name__ == "__main__":
    record.run(main, "bench.speed.detect_batch")
