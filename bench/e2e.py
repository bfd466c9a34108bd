"""facepipe end to end against face_recognition, on the same images, in one run.

    .venv/bin/python bench/e2e.py [--archive /tmp/facepipe-bench] [--images 120] [--shared ../shared]

1. Builds (or reuses) the benchmark archive of bench/archive.py: large real backgrounds with
   real faces pasted in, ground-truth boxes recorded.
2. facepipe through a local Ray cluster (`facepipe run` minus the scoring stage, which
   face_recognition has no counterpart of): images/s, faces/s, task seconds per stage, CPU
   utilisation and peak memory of all processes; then the same stages in one plain process
   (no Ray), so Ray's overhead is a number.
3. face_recognition (dlib: HOG detector upsampled once, 5-point predictor, ResNet descriptor --
   its defaults) on the same files in one process.
4. Recall of both against the pasted faces and on ../shared's pascal_faces_dev, with the dlib
   matching rule (IoU >= 0.3 or a detection centred in the box).

face_recognition is a bench-only dependency: `pip install --no-deps face_recognition==1.3.0`
(dlib-bin and face-recognition-models come with the test extra); its model package imports
pkg_resources, which current setuptools lacks, so a two-line stand-in is installed first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np


class Sampler:
    """CPU utilisation (all processes, in cores) and summed RSS, sampled every 0.5 s."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.cpu: list[float] = []
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ps = self.psutil
        ps.cpu_percent(None)
        while not self._stop.wait(0.5):
            self.cpu.append(ps.cpu_percent(None) / 100 * ps.cpu_count())
            total = 0
            for p in ps.process_iter(["memory_info"]):
                try:
                    total += p.info["memory_info"].rss
                except (ps.Error, TypeError):
                    pass
            self.rss.append(total)

    def __enter__(self) -> "Sampler":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()

    def summary(self) -> str:
        if not self.cpu:
            return "cpu n/a"
        busy = f"CPU {np.mean(self.cpu):.2f} of {self.psutil.cpu_count()} cores busy on average"
        return f"{busy}, peak RSS of all processes {max(self.rss) / 2**30:.2f} GiB"


def recall(truth: dict[str, list], found: dict[str, np.ndarray]) -> tuple[int, int, int]:
    from facepipe.evaluate import match_dlib

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
    from facepipe.align.stage import align_image, cut_chips
    from facepipe.decode import DecodeConfig, decode_image
    from facepipe.detect.stage import detect_images
    from facepipe.registry import create_model

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archive", default="/tmp/facepipe-bench")
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--shared", default=os.environ.get("FACEPIPE_SHARED", "../shared"))
    ap.add_argument("--detector", default="centerface", help="as `facepipe run --detector`")
    ap.add_argument("--detector-weights", default=None)
    ap.add_argument("--detector-config", default=None)
    ap.add_argument("--min-face", type=int, default=0, help="as `facepipe run --min-face` (0 = fixed 640 px input)")
    a = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    sys.path.insert(0, str(Path(__file__).parent))
    import archive as bench_archive

    root = Path(a.archive)
    if not (root / "truth.json").is_file() or len(json.loads((root / "truth.json").read_text())) != a.images:
        bench_archive.build(root, a.images)
    truth = json.loads((root / "truth.json").read_text())
    files = sorted((root / "images").glob("*.jpg"))
    mp = [np.prod(__import__("PIL.Image", fromlist=["Image"]).open(f).size) / 1e6 for f in files]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {len(files)} images ({min(mp):.1f}-{max(mp):.1f} MP, "
        f"{sum(f.stat().st_size for f in files) / 2**20:.0f} MiB JPEG), {sum(map(len, truth.values()))} pasted faces"
    )

    import duckdb

    from facepipe.decode import DecodeConfig
    from facepipe.detect.stage import DetectConfig
    from facepipe.pipeline import RunConfig, run
    from facepipe.score.stage import ScoreConfig

    decode_cfg = DecodeConfig(min_face=a.min_face)
    detect_cfg = DetectConfig(name=a.detector, weights=a.detector_weights, config=a.detector_config)
    print(
        f"facepipe: detector {a.detector} {a.detector_config or ''} {a.detector_weights or ''}, "
        f"input long side {decode_cfg.long_side}"
        + (f", min face {a.min_face} px -> {decode_cfg.min_face_input} px" if a.min_face else "")
    )
    out = root / "output"
    cfg = RunConfig(
        inputs=(str(root / "images"),),
        output=str(out),
        run_id="e2e",
        dt="2026-01-01",
        decode=decode_cfg,
        detect=detect_cfg,
        score=ScoreConfig(enabled=False),
    )
    run(cfg)  # cold start: Ray, actors, model loads
    with Sampler() as s:
        m = run(cfg)
    t = m.timing
    rows = duckdb.sql(f"""select i.source_uri, f.x1, f.y1, f.x2, f.y2 from read_parquet('{out}/faces/*/*.parquet') f
                          join read_parquet('{out}/images/*/*.parquet') i using (image_id)""").fetchall()
    found: dict[str, list] = {}
    for uri, *box in rows:
        found.setdefault(Path(uri).name, []).append(box)
    fp_found = {k: np.asarray(v, np.float32) for k, v in found.items()}
    ray_rate = len(files) / t.pipeline_s
    print(
        f"\nfacepipe through Ray (warm): {ray_rate:.2f} images/s, {m.counts.faces / t.pipeline_s:.2f} faces/s "
        f"({t.pipeline_s:.1f}s); task seconds {t.stage_task_s}; {s.summary()}"
    )

    plain_s, stage, n_plain = run_plain(files, decode_cfg, detect_cfg)
    share = " · ".join(f"{k} {v:.1f}s ({100 * v / plain_s:.0f}%)" for k, v in stage.items())
    print(
        f"facepipe in one plain process: {len(files) / plain_s:.2f} images/s ({plain_s:.1f}s, {n_plain} faces): {share}"
    )

    with Sampler() as s:
        fr_s, fr_found, n_fr = run_face_recognition(files)
    fr_rate = len(files) / fr_s
    print(
        f"face_recognition (HOG x1 upsample, 5-point, ResNet): {fr_rate:.2f} images/s ({fr_s:.1f}s, {n_fr} "
        f"faces); {s.summary()}"
    )
    print(f"\nspeed-up, facepipe through Ray vs face_recognition: {ray_rate / fr_rate:.1f}x")

    for name, f in (("facepipe", fp_found), ("face_recognition", fr_found)):
        h, n, extra = recall(truth, f)
        print(
            f"recall on the pasted faces, {name:17s}: {h}/{n} = {h / n:.3f} (detections matching no pasted "
            f"face: {extra})"
        )

    dev = Path(a.shared) / "data" / "pascal_faces_dev"
    if dev.is_dir():
        from facepipe import evaluate
        from facepipe.registry import create_model

        gt = evaluate.load_imglab(dev / "training.xml")
        det = create_model(detect_cfg.name, detect_cfg.weights, kind="detector", config=detect_cfg.config)
        fp = {
            k: v[0]
            for k, v in evaluate.detect_for_eval(
                det, dev, sorted(gt), decode_cfg, score_threshold=detect_cfg.score_threshold
            ).items()
        }
        _, frd, _ = run_face_recognition([dev / k for k in sorted(gt)])
        for name, f in (("facepipe", fp), ("face_recognition", frd)):
            h, n, extra = recall({k: v.tolist() for k, v in gt.items()}, f)
            print(f"recall on pascal_faces_dev,   {name:17s}: {h}/{n} = {h / n:.3f} (unmatched detections: {extra})")
    else:
        print(f"(no {dev}: pascal_faces_dev recall skipped)")


if __name__ == "__main__":
    main()
