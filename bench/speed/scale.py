"""10^5 images through the whole job with the object store capped: does memory stay bounded?

    .venv/bin/python -m bench.speed.scale [--images 100000] [--per-shard 1000] [--face-every 20] \
        [--object-store-mib 1024] [--workdir /tmp/facepipe-bench-scale] [-- extra `facepipe run` flags]

1. Builds (once, seeded) ``--images`` small JPEGs (96-160 px) in WebDataset tar shards of
   ``--per-shard``: every ``--face-every``-th holds a real face (a crop around one of the offline
   photos' faces, mirrored, light changed), the others background crops of scikit-image photos
   without people. Not committed; the same seed gives the same bytes.
2. Starts its own S3 server (SeaweedFS, testbed/s3server.py) and uploads the shards (``--local``:
   input and output stay on the local disk).
3. Starts a one-node Ray cluster (``ray start --head``, its own temp dir and ports) with the object
   store capped at ``--object-store-mib``, and runs ``facepipe run s3://… --output s3://…``
   against it as a process of its own, defaults otherwise.
4. Samples every second the resident memory of each of the cluster's processes and of the
   driver; reports images/s, wall time, each process kind's peak, the driver's memory over the
   run (flat or growing), the object store's spilled and restored bytes (``ray memory
   --stats-only``) and the job's failed tasks (Ray's state API: a task or actor killed for memory
   shows there).

``--trace-driver REPORT [--tracemalloc]``: the driver is watched from inside
(bench/diagnostics/trace_driver.py), which writes what in its memory grew to REPORT.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np

from bench import record

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def build(root: Path, n: int, per_shard: int, face_every: int, seed: int = 0) -> list[Path]:
    """The shards (built once: a ``_complete`` marker records the parameters)."""
    import cv2
    from skimage import data as skd

    from testbed.pasted import BACKGROUNDS, agreed_faces

    marker = root / "_complete"
    params = f"{n} {per_shard} {face_every} {seed}"
    if marker.exists() and marker.read_text() == params:
        return sorted(root.glob("shard-*.tar"))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    faces = [(img, box) for _, img, boxes in agreed_faces() for box in boxes]
    backgrounds = [np.ascontiguousarray(getattr(skd, b)()) for b in BACKGROUNDS]
    backgrounds = [np.stack([b] * 3, -1) if b.ndim == 2 else b[:, :, :3] for b in backgrounds]
    backgrounds = [b for b in backgrounds if b.dtype == np.uint8 and min(b.shape[:2]) > 160]
    shards = []
    for s in range(0, n, per_shard):
        path = root / f"shard-{s // per_shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(s, min(s + per_shard, n)):
                side = int(rng.integers(96, 161))
                if i % face_every == 0:  # a face filling about half the picture
                    img, (x1, y1, x2, y2) = faces[int(rng.integers(len(faces)))]
                    w = x2 - x1
                    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                    half = w * rng.uniform(0.9, 1.2)
                    crop = img[max(0, int(cy - half)) : int(cy + half), max(0, int(cx - half)) : int(cx + half)]
                else:
                    bg = backgrounds[int(rng.integers(len(backgrounds)))]
                    y, x = rng.integers(0, bg.shape[0] - 160), rng.integers(0, bg.shape[1] - 160)
                    crop = bg[y : y + 160, x : x + 160]
                crop = cv2.resize(np.ascontiguousarray(crop, np.uint8), (side, side), interpolation=cv2.INTER_AREA)
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                crop = np.clip(crop.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
                data = _jpeg(np.ascontiguousarray(crop), int(rng.integers(75, 96)))
                info = tarfile.TarInfo(f"{i:08d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        shards.append(path)
    marker.write_text(params)
    return shards


def rss_parts(proc: Path = Path("/proc/self")) -> dict[str, int]:
    """RssAnon, RssFile and RssShmem of a process (``/proc/PID``), in bytes (0 when it has gone)."""
    parts = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
    try:
        for line in (proc / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in parts:
                parts[key] = int(value.split()[0]) << 10
    except OSError:
        pass
    return parts


class Sampler(threading.Thread):
    """RSS of the cluster's processes (by their temp dir in the command line) and the driver."""

    def __init__(self, marker: str, driver_pid: int) -> None:
        super().__init__(daemon=True)
        self.marker, self.driver = marker, driver_pid
        self.peaks: dict[str, int] = {}
        #: (seconds, RSS, and its parts from /proc/PID/status: anonymous -- the process's own heap --,
        #: file-backed -- library code paged in --, shared -- pages of Ray's object store it mapped)
        self.driver_rss: list[tuple[float, int, dict[str, int]]] = []
        self.stop = threading.Event()

    @staticmethod
    def _kind(cmd: str) -> str:
        if cmd.startswith("ray::"):
            name = (cmd[5:].split() or ["worker"])[0]
            return re.sub(r"[:(.].*", "", name) or "worker"
        for k in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "agent"):
            if k in cmd:
                return k
        return "other"

    def run(self) -> None:
        t0 = time.time()
        while not self.stop.wait(1.0):
            for d in Path("/proc").iterdir():
                if not d.name.isdigit():
                    continue
                try:
                    cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    rss = int((d / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                except (OSError, IndexError, ValueError):
                    continue
                if int(d.name) == self.driver:
                    self.driver_rss.append((time.time() - t0, rss, rss_parts(d)))
                    self.peaks["driver (facepipe run)"] = max(self.peaks.get("driver (facepipe run)", 0), rss)
                elif self.marker in cmd or cmd.startswith("ray::"):
                    k = self._kind(cmd)
                    self.peaks[k] = max(self.peaks.get(k, 0), rss)


def start_ray(temp: Path, object_store: int, env: dict) -> tuple[str, str, subprocess.Popen]:
    """A one-node cluster: (GCS address, dashboard URL -- what the state API is asked at, see
    testbed/procs.py -- and the `ray start` launcher, whose session holds its processes)."""
    from testbed.procs import free_ports

    gcs, dash = free_ports(2)
    cmd = [
        str(BIN / "ray"), "start", "--head", f"--temp-dir={temp}", f"--port={gcs}", f"--dashboard-port={dash}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--object-store-memory={object_store}",
        "--disable-usage-stats",
    ]  # fmt: skip
    p = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    out, _ = p.communicate(timeout=180)
    assert p.returncode == 0, out[-3000:]
    return f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--per-shard", type=int, default=1000)
    ap.add_argument("--face-every", type=int, default=20)
    ap.add_argument("--object-store-mib", type=int, default=1024)
    ap.add_argument("--workdir", default="/tmp/facepipe-bench-scale")
    ap.add_argument(
        "--trace-driver", metavar="REPORT", help="watch the driver's memory (bench/diagnostics/trace_driver.py)"
    )
    ap.add_argument("--tracemalloc", action="store_true", help="with --trace-driver: trace the Python heap too")
    ap.add_argument("--local", action="store_true", help="input and output on the local disk, not S3")
    ap.add_argument("extra", nargs="*", help="extra `facepipe run` flags (after --)")
    a = ap.parse_args()
    import tempfile

    from testbed.procs import end, free_ports, own_processes
    from testbed.s3server import SeaweedFS, s3_env

    work = Path(a.workdir)
    t0 = time.time()
    shards = build(work / "shards", a.images, a.per_shard, a.face_every)
    size = sum(p.stat().st_size for p in shards)
    print(f"archive: {a.images} images in {len(shards)} tar shards, {size / 2**20:.0f} MiB ({time.time() - t0:.0f}s)")
    port = free_ports(1)[0]
    env = {**os.environ, **s3_env(port), "RAY_USAGE_STATS_ENABLED": "0"}
    s3root = work / "s3"
    shutil.rmtree(s3root, ignore_errors=True)
    s3root.mkdir(parents=True)
    server = SeaweedFS(s3root, port, env)
    server.start()
    temp = Path(tempfile.mkdtemp(prefix="fpscale-", dir="/tmp"))
    launcher = None
    try:
        src, dst = str(work / "shards"), str(work / "out")
        if not a.local:
            src, dst = "s3://scale-in/night", "s3://scale-out/out"
            for b in ("scale-in", "scale-out"):
                server.client.create_bucket(Bucket=b)
            for p in shards:
                server.client.upload_file(str(p), "scale-in", f"night/{p.name}")
        address, dashboard, launcher = start_ray(temp, a.object_store_mib << 20, env)
        driver = [str(BIN / "facepipe")]
        if a.trace_driver:
            traced = ["--tracemalloc"] if a.tracemalloc else []
            driver = [sys.executable, "-m", "bench.diagnostics.trace_driver", a.trace_driver, *traced, "--"]
        run = [
            *driver, "run", src, "--output", dst, "--run-id", "scale",
            "--ray-address", address, *a.extra,
        ]  # fmt: skip
        t1 = time.time()
        job = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sampler = Sampler(str(temp), job.pid)
        sampler.start()
        log, _ = job.communicate()
        wall = time.time() - t1
        sampler.stop.set()
        sampler.join()
        print(log[-2500:])
        mem = subprocess.run(
            [str(BIN / "ray"), "memory", "--stats-only", "--address", address], env=env, capture_output=True, text=True
        ).stdout
        spill = [ln.strip() for ln in mem.splitlines() if re.search(r"Spilled|Restored", ln)]
        from ray.util.state import list_tasks

        failed = list_tasks(
            address=dashboard, filters=[("state", "=", "FAILED")], limit=10_000, raise_on_missing_output=False
        )
        oom = [t for t in failed if "OUT_OF_MEMORY" in str(t.error_type) or "memory" in str(t.error_message).lower()]
        report(a, job.returncode, wall, sampler, spill, failed, oom)
    finally:
        if launcher is not None:
            end(own_processes(launcher.pid, str(temp)))
        shutil.rmtree(temp, ignore_errors=True)
        server.stop()


def report(a, code: int, wall: float, sampler: Sampler, spill: list[str], failed: list, oom: list) -> None:
    print(f"\nexit {code}; {a.images} images in {wall:.0f}s = {a.images / wall:.1f} images/s (whole job, Ray up)")
    print(f"object store capped at {a.object_store_mib} MiB; {'; '.join(spill) or 'nothing spilled'}")
    print(f"failed tasks: {len(failed)} ({len(oom)} for memory)")
    print("peak resident memory per process kind:")
    for k, v in sorted(sampler.peaks.items(), key=lambda kv: -kv[1]):
        print(f"  {k:40s} {v / 2**20:8.0f} MiB")
    d = sampler.driver_rss
    if d:
        pick = [d[int(len(d) * q)] for q in (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)]
        print("driver RSS over the run (anonymous / file-backed / shared, MiB):")
        for t, r, parts in pick:
            anon, file, shm = (parts[k] / 2**20 for k in ("RssAnon", "RssFile", "RssShmem"))
            print(f"  {t:5.0f}s {r / 2**20:6.0f} MiB = {anon:.0f} / {file:.0f} / {shm:.0f}")
    print(json.dumps({"images": a.images, "wall_s": round(wall), "exit": code}))
    record.numbers(images=a.images, wall_s=wall, exit=code, spilled=spill, failed_tasks=len(failed), oom_tasks=len(oom))


if __name__ == "__main__":
    record.run(main, "bench.speed.scale")
