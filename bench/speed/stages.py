"""Per-stage speed of the extract job on the demo photos, and the whole job through Ray.

    .venv/bin/python -m bench.speed.stages [--repeat 3] [--workdir /tmp/facepipe-bench]

Prints decode and detect time per image in one plain process (no Ray), then runs `facepipe demo`'s
archive through a local Ray cluster and prints images/s and per-stage task seconds from the run
manifest. Numbers, not assertions: copy them into bench/RESULTS.md with the date and machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from bench import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/facepipe-bench")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    from facepipe.registry import create_model
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.tools import demo

    photos = demo.photos()
    blobs = [p.read_bytes() for p in photos.values()]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"photos: {len(blobs)} real photos, {sum(map(len, blobs)) / 1e6:.1f} MB encoded")

    cfg = DecodeConfig()
    t = time.perf_counter()
    for _ in range(a.repeat):
        decoded = [decode_image(b, cfg) for b in blobs]
    dec = (time.perf_counter() - t) / (a.repeat * len(blobs))
    full = DecodeConfig(long_side=0)
    t = time.perf_counter()
    for _ in range(a.repeat):
        for b in blobs:
            decode_image(b, full)
    dec_full = (time.perf_counter() - t) / (a.repeat * len(blobs))
    record.numbers(decode_ms=dec * 1e3, decode_full_ms=dec_full * 1e3)
    print(
        f"decode  {dec * 1e3:7.1f} ms/image to detector size (DCT-reduced JPEG)   {dec_full * 1e3:7.1f} "
        "ms/image at full size"
    )

    det = create_model("centerface", kind="detector")
    images = [d.pixels for d in decoded]
    det.detect(images[:2])  # warm-up
    for bs in (1, 8):
        t = time.perf_counter()
        for _ in range(a.repeat):
            det.detect(images, batch_size=bs)
        per = (time.perf_counter() - t) / (a.repeat * len(images))
        print(f"detect  {per * 1e3:7.1f} ms/image at long side 640, batch size {bs}")
        record.numbers(**{f"detect_ms_batch_{bs}": per * 1e3})

    from facepipe.config import RunConfig
    from facepipe.run.job import run
    from facepipe.stages.read.sources import ReadConfig
    from facepipe.summary import format_summary

    arch = demo.build_demo_archive(a.workdir)
    cfg = RunConfig(
        inputs=arch.inputs,
        output=f"{a.workdir}/output",
        run_id="bench",
        read=ReadConfig(image_column="image", id_column="key"),
    )
    for attempt in ("cold (includes Ray start and actor start)", "warm (cluster and actors already up)"):
        m = run(cfg)
        print(f"\nwhole job through Ray, {attempt}:")
        print(format_summary(m))


if __name__ == "__main__":
    record.run(main, "bench.speed.stages")
