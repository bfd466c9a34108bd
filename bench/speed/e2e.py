"""facepipe end to end against face_recognition: the whole job as a user runs it, side by side.

    .venv/bin/python -m bench.speed.e2e [--archive-kind ordinary|pasted] [--archive DIR] [--images N] \
        [--shared ../shared] [--cores 1,2] [--plain] [-- extra `facepipe run` flags]

1. Builds (or reuses) the archive: ``ordinary`` (default; testbed/ordinary.py: 200 portrait and group
   photos of 0.3-5 MP, faces 60-400 px) or ``pasted`` (testbed/pasted.py: 120 large backgrounds
   with real faces pasted at 40-400 px).
2. ``facepipe run IMAGES --output OUT`` as a fresh process with default settings (plus any flags
   after ``--``), for each core count in ``--cores`` (``taskset``: 1 core, 2 cores): whole-job
   wall time (process start to exit: imports, Ray start, the pipeline, scoring, identities, Ray
   shutdown), the run's own figures (cores busy, task seconds per stage), and the peak memory of
   all processes, sampled from /proc every 0.25 s.
3. face_recognition (dlib: HOG detector upsampled once, 5-point predictor, ResNet descriptor -- its
   defaults) on the same files, also as a fresh process (import and model load included).
4. The ratio of the two wall times; photos with at least one embedded face; recall of both against
   the archive's truth and on ../shared's pascal_faces_dev, with the dlib matching rule (IoU >= 0.3
   or a detection centred in the box). ``--plain`` adds facepipe's stages in one plain process.

face_recognition is a bench-only dependency: `pip install --no-deps face_recognition==1.3.0`
(dlib-bin and face-recognition-models come with the test extra); its model package imports
pkg_resources, which current setuptools lacks, so a two-line stand-in is installed first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np

from bench import record


class Sampler:
    """Busy cores and the summed resident memory of all processes, read from /proc every 0.25 s."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu() -> tuple[int, int]:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(v), v[3] + v[4]

    @staticmethod
    def _rss() -> int:
        total = 0
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    total += int((d / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                except (OSError, IndexError, ValueError):
                    pass
        return total

    def _run(self) -> None:
        last = self._cpu()
        while not self._stop.wait(0.25):
            now = self._cpu()
            busy = 1 - (now[1] - last[1]) / max(1, now[0] - last[0])
            self.cpu.append(busy * os.cpu_count())
            self.rss.append(self._rss())
            last = now

    def __enter__(self) -> "Sampler":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()

    def summary(self) -> str:
        if not self.cpu:
            return "cpu n/a"
        busy = f"CPU {np.mean(self.cpu):.2f} of {os.cpu_count()} cores busy on average"
        return f"{busy}, peak RSS of all processes {max(self.rss) / 2**30:.2f} GiB"


def recall(truth: dict[str, list], found: dict[str, np.ndarray]) -> tuple[int, int, int]:
    from facepipe.tools.evaluate import match_dlib

    hit = total = extra = 0
    for name, gt in truth.items():
        gt = np.asarray(gt, np.float32).reshape(-1, 4)
        det = found.get(name, np.zeros((0, 4), np.float32))
        m = match_dlib(gt, det) if len(gt) and len(det) else np.zeros((len(gt), len(det)), bool)
        hit += int(m.any(1).sum())
        total += len(gt)
        extra += int((~m.any(0)).sum()) if len(det) else 0
    return hit, total, extra


def face_recognition_module():
    if "pkg_resources" not in sys.modules:  # face_recognition_models imports it for one function
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda pkg, path: os.path.join(os.path.dirname(sys.modules[pkg].__file__), path)
        sys.modules["pkg_resources"] = shim
    import face_recognition

    return face_recognition


def run_face_recognition(files: list[Path]) -> tuple[float, dict[str, np.ndarray], int]:
    fr = face_recognition_module()
    found, n = {}, 0
    t = time.perf_counter()
    for f in files:
        img = fr.load_image_file(str(f))
        locs = fr.face_locations(img, number_of_times_to_upsample=1, model="hog")
        fr.face_encodings(img, locs)  # 5-point predictor + ResNet, its defaults
        found[f.name] = np.array([[left, top, r, b] for top, r, b, left in locs], np.float32).reshape(-1, 4)
        n += len(locs)
    return time.perf_counter() - t, found, n


def run_plain(files: list[Path], decode_cfg, detect_cfg) -> tuple[float, dict[str, float], int]:
    """The job's stages in one process, no Ray: decode -> detect -> align -> embed."""
    from facepipe.registry import create_model
    from facepipe.stages.align.stage import align_image, cut_chips
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.stages.detect.stage import detect_images

    det = create_model(detect_cfg.name, detect_cfg.weights, kind="detector", config=detect_cfg.config)
    sp = create_model("dlib_shape_predictor_5", kind="landmarks")
    net = create_model("dlib_resnet", kind="embedder")
    stage = {"decode": 0.0, "detect": 0.0, "align": 0.0, "embed": 0.0}
    n = 0
    t0 = time.perf_counter()
    for f in files:
        data = f.read_bytes()
        t = time.perf_counter()
        d = decode_image(data, decode_cfg)
        stage["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        (found,) = detect_images(det, [d.pixels], [(d.scale_x, d.scale_y)], [(d.width, d.height)], detect_cfg)
        stage["detect"] += time.perf_counter() - t
        if len(found):
            t = time.perf_counter()
            full = decode_image(data, DecodeConfig(max_pixels=decode_cfg.max_pixels, long_side=0)).pixels
            chips = cut_chips(align_image(full, found.boxes, found.landmarks, net.chip, "dlib_sp5", sp), net.chip)
            stage["align"] += time.perf_counter() - t
            t = time.perf_counter()
            net.embed(chips)
            stage["embed"] += time.perf_counter() - t
        n += len(found)
    return time.perf_counter() - t0, stage, n


FR_SCRIPT = """
import json, os, sys, time, types
shim = types.ModuleType("pkg_resources")
shim.resource_filename = lambda pkg, path: os.path.join(os.path.dirname(sys.modules[pkg].__file__), path)
sys.modules["pkg_resources"] = shim
import face_recognition as fr

found = {}
for f in json.load(sys.stdin):
    img = fr.load_image_file(f)
    locs = fr.face_locations(img, number_of_times_to_upsample=1, model="hog")
    fr.face_encodings(img, locs)
    found[os.path.basename(f)] = [[l, t, r, b] for t, r, b, l in locs]
print(json.dumps(found))
"""


def timed(cmd: list[str], stdin: str | None = None) -> tuple[float, str, Sampler]:
    """Run ``cmd`` as a fresh process; its wall time, stdout and the machine's samples meanwhile."""
    with Sampler() as s:
        t = time.perf_counter()
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
        wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{cmd[:3]} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall, p.stdout, s


def facepipe_boxes(out: Path) -> dict[str, np.ndarray]:
    import duckdb

    rows = duckdb.sql(f"""select i.source_uri, f.x1, f.y1, f.x2, f.y2 from read_parquet('{out}/faces/*/*.parquet') f
                          join read_parquet('{out}/images/*/*.parquet') i using (image_id)""").fetchall()
    found: dict[str, list] = {}
    for uri, *box in rows:
        found.setdefault(Path(uri).name, []).append(box)
    return {k: np.asarray(v, np.float32) for k, v in found.items()}


def build_archive(kind: str, root: Path, n: int | None, shared: Path) -> None:
    if kind == "ordinary":
        from testbed import ordinary

        n = n or 200
        if not (root / "truth.json").is_file() or len(json.loads((root / "truth.json").read_text())) != n:
            ordinary.build(root, shared, n)
    else:
        from testbed import pasted as archive

        n = n or 120
        if not (root / "truth.json").is_file() or len(json.loads((root / "truth.json").read_text())) != n:
            archive.build(root, n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archive-kind", choices=("ordinary", "pasted"), default="ordinary")
    ap.add_argument("--archive", default=None, help="default /tmp/facepipe-bench-KIND")
    ap.add_argument("--images", type=int, default=None, help="default 200 ordinary, 120 pasted")
    ap.add_argument("--shared", default=os.environ.get("FACEPIPE_SHARED", "../shared"))
    ap.add_argument("--cores", default="2", help="comma-separated core counts to run facepipe on (taskset)")
    ap.add_argument("--plain", action="store_true", help="also facepipe's stages in one plain process")
    ap.add_argument("extra", nargs="*", help="flags for `facepipe run` (after --); none = its defaults")
    a = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    root = Path(a.archive or f"/tmp/facepipe-bench-{a.archive_kind}")
    build_archive(a.archive_kind, root, a.images, Path(a.shared))
    truth = json.loads((root / "truth.json").read_text())
    files = sorted((root / "images").glob("*.jpg"))
    from PIL import Image

    mp = sorted(np.prod(Image.open(f).size) / 1e6 for f in files)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {a.archive_kind} archive {root}: {len(files)} photos "
        f"({mp[0]:.1f}-{mp[-1]:.1f} MP, median {np.median(mp):.2f}), {sum(map(len, truth.values()))} true faces"
    )
    exe = str(Path(sys.executable).with_name("facepipe"))
    fp_found: dict[str, np.ndarray] = {}
    fp_wall = {}
    for cores in [int(c) for c in a.cores.split(",")]:
        out = root / f"output-{cores}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        cmd = ["taskset", "-c", ",".join(map(str, range(cores))), exe, "run", str(root / "images"), "--output"]
        wall, _, s = timed([*cmd, str(out), "--summary-json", str(root / "summary.json"), *a.extra])
        m = json.loads(next((out / "_runs").glob("*.json")).read_text())
        t = m["timing"]
        fp_wall[cores], fp_found = wall, facepipe_boxes(out)
        record.numbers(**{f"facepipe_{cores}_cores": {"wall_s": wall, "images_per_s": len(files) / wall,
                                                        "faces": m["counts"]["faces"], "timing": t}})  # fmt: skip
        print(
            f"\nfacepipe run, {cores} core(s), `{' '.join(['facepipe run IMAGES --output OUT', *a.extra])}`: "
            f"{wall:.1f}s wall for the whole job = {len(files) / wall:.2f} images/s; {m['counts']['faces']} faces\n"
            f"  its figures: executor {m['resources'].get('executor', 'ray')}, "
            + (f"Ray start {t['ray_start_s']}s, " if t.get("ray_start_s") is not None else "")
            + f"pipeline {t['pipeline_s']:.1f}s "
            f"({t['images_per_s']} images/s), score {t['score_s']}s, identities {t['cluster_s']}s, run {t['wall_s']}s;"
            f" cores busy {t.get('cores_busy')} of {m['resources']['cluster_cpus']}\n"
            f"  task seconds {t['stage_task_s']}\n  {s.summary()}"
        )
    if a.plain:
        from facepipe.stages.decode import DecodeConfig
        from facepipe.stages.detect.stage import DetectConfig

        plain_s, stage, n_plain = run_plain(files, DecodeConfig(), DetectConfig())
        share = " · ".join(f"{k} {v:.1f}s ({100 * v / plain_s:.0f}%)" for k, v in stage.items())
        print(f"facepipe stages in one plain process: {len(files) / plain_s:.2f} images/s ({n_plain} faces): {share}")

    fr_s, fr_out, s = timed([sys.executable, "-c", FR_SCRIPT], json.dumps([str(f) for f in files]))
    fr_found = {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in json.loads(fr_out).items()}
    print(
        f"\nface_recognition (HOG x1 upsample, 5-point, ResNet), 1 process: {fr_s:.1f}s wall = "
        f"{len(files) / fr_s:.2f} images/s, {sum(map(len, fr_found.values()))} faces; {s.summary()}"
    )
    record.numbers(face_recognition={"wall_s": fr_s, "images_per_s": len(files) / fr_s}, images=len(files))
    for cores, wall in fp_wall.items():
        print(f"whole-job speed-up, facepipe on {cores} core(s) vs face_recognition: {fr_s / wall:.1f}x")
        record.numbers(**{f"speedup_{cores}_cores": fr_s / wall})
    for name, f in (("facepipe", fp_found), ("face_recognition", fr_found)):
        h, n, extra = recall(truth, f)
        with_face = sum(1 for v in f.values() if len(v))
        record.numbers(**{f"{name}_archive_recall": h / n, f"{name}_unmatched": extra})
        print(
            f"{name:17s}: photos with a face {with_face}/{len(files)}; recall on the archive's faces {h}/{n} = "
            f"{h / n:.3f} (detections matching no true face: {extra})"
        )
    dev = Path(a.shared) / "data" / "pascal_faces_dev"
    from facepipe.registry import create_model
    from facepipe.stages.decode import DecodeConfig
    from facepipe.tools import evaluate

    gt = evaluate.load_imglab(dev / "training.xml")
    det = create_model("yunet", kind="detector")
    found = evaluate.detect_for_eval(det, dev, sorted(gt), DecodeConfig(), score_threshold=0.5)
    fp = {k: v[0] for k, v in found.items()}
    _, frd, _ = run_face_recognition([dev / k for k in sorted(gt)])
    for name, f in (("facepipe", fp), ("face_recognition", frd)):
        h, n, extra = recall({k: v.tolist() for k, v in gt.items()}, f)
        record.numbers(**{f"{name}_dev_recall": h / n})
        print(f"recall on pascal_faces_dev,   {name:17s}: {h}/{n} = {h / n:.3f} (unmatched detections: {extra})")


if __name__ == "__main__":
    record.run(main, "bench.speed.e2e")
