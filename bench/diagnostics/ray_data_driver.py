"""Does a plain Ray Data pipeline grow its driver's memory run after run? The control for
bench/diagnostics/trace_driver.py's finding on `facepipe run`'s driver (bench/RESULTS.md, "More than one node").

    .venv/bin/python -m bench.diagnostics.ray_data_driver [--rows 40000] [--runs 3]

A local Ray cluster (2 CPUs, its own temp dir) and the job's shape without its stages: a task
map makes 48 KiB "images" from a range, an actor pool of two takes batches of 8 and returns a
small row each with a 128-float "embedding", a task map collects batches of 4,096. The driver's
anonymous resident memory is printed after each run and again after the dataset is dropped.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time

import numpy as np

from bench import record
from bench.speed.scale import rss_parts  # bench/, this script's folder


def anon_mib() -> float:
    return rss_parts()["RssAnon"] / 2**20


def decode(batch: dict) -> dict:
    return {"id": batch["id"], "img": np.ones((len(batch["id"]), 128 * 128 * 3), np.uint8)}


class Model:
    def __call__(self, batch: dict) -> dict:
        return {"id": batch["id"], "e": np.ones((len(batch["id"]), 128), np.float32)}


def write(batch: dict) -> dict:
    return {"n": np.array([len(batch["id"])])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    import ray
    import ray.data

    temp = tempfile.mkdtemp(prefix="fprd-", dir="/tmp")
    ray.init(num_cpus=2, object_store_memory=256 << 20, _temp_dir=temp, include_dashboard=False, logging_level="ERROR")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        print(f"driver anonymous memory at start: {anon_mib():.0f} MiB")
        for run in range(a.runs):
            t0 = time.time()
            ds = (
                ray.data.range(a.rows, override_num_blocks=a.rows // 64)
                .map_batches(decode, batch_size=None, num_cpus=0.5)
                .map_batches(Model, batch_size=8, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=0.5)
                .map_batches(write, batch_size=4096, num_cpus=0.5)
            )
            rows = ds.take_all()
            after = anon_mib()
            del ds, rows
            gc.collect()
            took = time.time() - t0
            print(f"run {run}: {a.rows} rows in {took:.0f}s; anonymous {after:.0f} MiB, dropped {anon_mib():.0f}")
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    record.run(main, "bench.diagnostics.ray_data_driver")
