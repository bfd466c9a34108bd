"""What outlier scoring costs: the score stage's share of the job's wall time, and the model
actors' extra work per face (the face verifier and the quality features) against the rest of
align + embed.

    .venv/bin/python -m bench.speed.outlier_time --archive /tmp/benchA --shared ../shared

The job runs as in the recall-parity benchmark (bench/speed/e2e.py): the pasted-face archive (120
photos of 1-12 MP, testbed/pasted.py seed 0), the 1 MB RetinaFace, ``--min-face 40`` -- about 700
detections, most of them the false detections scoring is for -- through Ray, warm (a first run
starts the cluster and the actors), scoring and clustering on.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from bench import record


def actor_overhead(files: list[Path], decode_cfg, detect_cfg) -> dict[str, float]:
    """Seconds, in one process, of align + embed and of verifier + quality features for every face."""
    from facepipe.registry import create_model
    from facepipe.stages.align.quality import sharpness
    from facepipe.stages.align.stage import align_batch
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.stages.detect.stage import detect_images
    from facepipe.stages.score.onet import square_crops

    det = create_model(detect_cfg.name, detect_cfg.weights, kind="detector", config=detect_cfg.config)
    sp = create_model("dlib_shape_predictor_5", kind="landmarks")
    net = create_model("dlib_resnet", kind="embedder")
    verifier = create_model("mtcnn_onet", kind="verifier")
    t = {"align+embed": 0.0, "verifier": 0.0, "sharpness": 0.0, "faces": 0}
    for f in files:
        data = f.read_bytes()
        d = decode_image(data, decode_cfg)
        (found,) = detect_images(det, [d.pixels], [(d.scale_x, d.scale_y)], [(d.width, d.height)], detect_cfg)
        if not len(found):
            continue
        full = decode_image(data, DecodeConfig(long_side=0)).pixels
        t0 = time.perf_counter()
        chips, _ = align_batch([full], [found.boxes], [found.landmarks], net.chip, "dlib_sp5", sp)
        net.embed(chips)
        t1 = time.perf_counter()
        verifier.face_logits(square_crops(full, found.boxes))
        t2 = time.perf_counter()
        sharpness(chips)
        t["align+embed"] += t1 - t0 - (time.perf_counter() - t2)  # align_batch measures sharpness too
        t["verifier"] += t2 - t1
        t["sharpness"] += time.perf_counter() - t2
        t["faces"] += len(found)
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archive", default="/tmp/benchA")
    ap.add_argument("--shared", default=os.environ.get("FACEPIPE_SHARED", "../shared"))
    a = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import outlier_scores  # bench/, beside this script

    from facepipe.config import RunConfig
    from facepipe.run.job import run
    from facepipe.stages.decode import DecodeConfig
    from facepipe.stages.detect.stage import DetectConfig
    from facepipe.stages.read.sources import ReadConfig

    archive = Path(a.archive)
    if not (archive / "truth.json").exists():
        outlier_scores.bench_archive().build(archive, 120, 0)
    weights = Path(a.shared) / "data" / "retinaface" / "mnet025_face_detector_1mb.pth"
    detect = DetectConfig(name="retinaface", weights=str(weights), config="mnet025_1mb")
    decode = DecodeConfig(min_face=40)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(
            inputs=(str(archive / "images"),), output=f"{tmp}/out", dt="2026-11-01", read=ReadConfig(), detect=detect,
            decode=decode,
        )  # fmt: skip
        run(dataclasses.replace(cfg, run_id="cold"))
        m = run(dataclasses.replace(cfg, run_id="warm", output=f"{tmp}/out2"))
    t = m.timing
    print(
        f"job (warm): {m.counts.images} images, {m.counts.faces} faces, wall {t.wall_s:.1f}s: pipeline "
        f"{t.pipeline_s:.1f}s, publish {t.publish_s:.1f}s, score {t.score_s:.1f}s "
        f"({100 * t.score_s / t.wall_s:.1f}% of wall), cluster {t.cluster_s:.1f}s; "
        f"{m.score['outliers']} of {m.score['scored']} faces flagged"
    )
    files = sorted((archive / "images").glob("*.jpg"))
    o = actor_overhead(files, decode, detect)
    extra = o["verifier"] + o["sharpness"]
    print(
        f"model actors, one process, {o['faces']} faces: align + embed {o['align+embed']:.1f}s; verifier "
        f"{o['verifier']:.2f}s + sharpness {o['sharpness']:.2f}s = {1000 * extra / max(o['faces'], 1):.2f} ms a face "
        f"({100 * extra / o['align+embed']:.1f}% of align + embed)"
    )


if __name__ == "__main__":
    record.run(main, "bench.speed.outlier_time")
