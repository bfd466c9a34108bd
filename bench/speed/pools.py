"""One actor pool (detect + align + embed) or two (detect, then align + embed)? Measured.

    .venv/bin/python -m bench.speed.pools [--copies 12] [--workdir /tmp/facepipe-pools]

Builds tar shards holding ``--copies`` copies of every test photo (10 photos, 15 faces per copy),
then runs the whole job through a local Ray cluster in both layouts with the same CPU reservation for
model actors (1 CPU): one actor of 1 CPU, two actors of 0.5 CPU in one pool, or one actor of 0.5 CPU
per pool; each twice (the second run is warm). Prints images/s and faces/s per run.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import platform
import tarfile
from pathlib import Path

from bench import record


def build_shards(root: Path, copies: int, per_shard: int = 20) -> list[str]:
    from facepipe.tools import demo

    photos = demo.photos()
    items = [(f"{c:03d}-{n}", p.read_bytes()) for c in range(copies) for n, p in photos.items()]
    root.mkdir(parents=True, exist_ok=True)
    for f in root.glob("*.tar"):
        f.unlink()
    for s in range(0, len(items), per_shard):
        with tarfile.open(root / f"shard-{s // per_shard:05d}.tar", "w") as tf:
            for name, data in items[s : s + per_shard]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return [str(root)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=12)
    ap.add_argument("--workdir", default="/tmp/facepipe-pools")
    a = ap.parse_args()

    from facepipe.config import ComputeConfig, RunConfig
    from facepipe.run.job import run

    inputs = build_shards(Path(a.workdir) / "shards", a.copies)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; archive: {a.copies} copies of the 10 test photos")
    base = RunConfig(inputs=tuple(inputs), output=f"{a.workdir}/output", dt="2026-01-01")
    layouts = {
        "one pool  (FaceActor, 1 actor x 1 CPU)": ComputeConfig(
            detect_actors_max=1, cpus_per_detect_actor=1.0, torch_threads=1
        ),
        "one pool  (FaceActor, 2 actors x 0.5 CPU)": ComputeConfig(
            detect_actors_min=2, detect_actors_max=2, cpus_per_detect_actor=0.5, torch_threads=1
        ),
        "default   (FaceActor, pool of 1-2 actors x 0.5 CPU)": ComputeConfig(),
        "two pools (DetectActor + EmbedActor, 1 actor x 0.5 CPU each)": ComputeConfig(
            detect_actors_max=1, cpus_per_detect_actor=0.5, torch_threads=1, embed_pool=True
        ),
    }
    for name, compute in layouts.items():
        for attempt in ("cold", "warm"):
            m = run(dataclasses.replace(base, compute=compute, run_id="pools"))
            t = m.timing
            n_img, n_faces = m.counts.images, m.counts.faces
            record.numbers(**{f"{name.split('(')[0].strip()} {attempt}": {"images_per_s": n_img / t.pipeline_s,
                                                                          "pipeline_s": t.pipeline_s}})  # fmt: skip
            print(
                f"{name:62s} {attempt}: {n_img} images, {n_faces} faces in {t.pipeline_s:6.1f}s -> "
                f"{n_img / t.pipeline_s:5.2f} images/s, {n_faces / t.pipeline_s:5.2f} faces/s; "
                f"task s {t.stage_task_s}"
            )


if __name__ == "__main__":
    record.run(main, "bench.speed.pools")
