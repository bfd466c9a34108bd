"""Detect stage: decoded batch -> per-image detections in original-image pixels.

``detect_batch`` is the pure core; its Ray adapter is ``facepipe.run.actors.FaceActor``, which
runs detection, alignment and embedding in one actor pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from facepipe.flags import flag, positive_int, unit_float
from facepipe.schema import DETECTED
from facepipe.stages.detect.base import Detections, FaceDetector


@dataclass(frozen=True)
class DetectConfig:
    """Detector choice and thresholds.

    name / weights: a registered detector and optionally weights (local path or ``s3://``)
    replacing its default. config: a preset name or JSON file for detector families that need
    one (RetinaFace: ``mnet025``, ``mnet025_relu``, ``mnet025_1mb``, ``r50``).
    score_threshold: minimum detection score kept. nms_threshold: IoU above which the weaker of
    two overlapping faces is dropped. batch_size: images per forward pass. (Where the models
    run is the run's ``ComputeConfig.device``.)
    """

    name: str = flag("yunet", "--detector", "registered detector name")
    weights: str | None = flag(
        None, "--detector-weights", "detector weights, local path or s3:// (required for retinaface)"
    )
    config: str | None = flag(
        None,
        "--detector-config",
        "detector config: a preset (retinaface: mnet025, mnet025_relu, mnet025_1mb, r50) or a JSON file",
    )
    score_threshold: float = flag(0.5, "--score-threshold", "minimum detection score", type=unit_float)
    nms_threshold: float = flag(0.3, "--nms-threshold", "NMS IoU threshold", type=unit_float)
    max_faces: int = 1000
    batch_size: int = flag(8, "--batch-size", "images per detector forward pass", type=positive_int)


def detect_images(
    detector: FaceDetector,
    images: list[np.ndarray],
    scales: list[tuple[float, float]],
    sizes: list[tuple[int, int]],
    cfg: DetectConfig,
) -> list[Detections]:
    """Detect in detector-sized images and map results to original pixels.

    images: (h, w, 3) uint8 RGB at detector size; scales: (sx, sy) with detector = original * s;
    sizes: (width, height) of the originals, to which boxes are clipped.
    """
    out = []
    found = detector.detect(images, cfg.score_threshold, cfg.nms_threshold, cfg.max_faces, cfg.batch_size)
    for det, (sx, sy), (w, h) in zip(found, scales, sizes):
        d = det.scaled(sx, sy)
        d.boxes[:, 0::2] = d.boxes[:, 0::2].clip(0, w)
        d.boxes[:, 1::2] = d.boxes[:, 1::2].clip(0, h)
        out.append(d)
    return out


def detect_batch(batch: dict[str, np.ndarray], detector: FaceDetector, cfg: DetectConfig) -> pa.Table:
    """Decoded batch (see ``decode.decode_batch``) -> ``schema.DETECTED`` table, one row per image."""
    t0 = time.perf_counter()
    n = len(batch["image_id"])
    ok = [i for i in range(n) if batch["status"][i] == "ok"]
    images = [
        np.frombuffer(batch["pixels"][i], np.uint8).reshape(int(batch["pix_h"][i]), int(batch["pix_w"][i]), 3)
        for i in ok
    ]
    found = detect_images(
        detector,
        images,
        [(float(batch["scale_x"][i]), float(batch["scale_y"][i])) for i in ok],
        [(int(batch["width"][i]), int(batch["height"][i])) for i in ok],
        cfg,
    )
    dets = dict(zip(ok, found))
    empty = Detections.empty()
    per = [dets.get(i, empty) for i in range(n)]
    t_detect = (time.perf_counter() - t0) / max(n, 1)
    return pa.table(
        {
            "image_id": pa.array(batch["image_id"], pa.string()),
            "source_uri": pa.array(batch["source_uri"], pa.string()),
            "width": pa.array(batch["width"], pa.int32()),
            "height": pa.array(batch["height"], pa.int32()),
            "status": pa.array(batch["status"], pa.string()),
            "error": pa.array(batch["error"], pa.string()),
            "n_faces": pa.array([len(d) for d in per], pa.int32()),
            "detector": pa.array([detector.model_id] * n, pa.string()),
            "boxes": pa.array([d.boxes.reshape(-1) for d in per], pa.list_(pa.float32())),
            "scores": pa.array([d.scores for d in per], pa.list_(pa.float32())),
            "landmarks": pa.array([d.landmarks.reshape(-1) for d in per], pa.list_(pa.float32())),
            "t_decode": pa.array(batch["t_decode"], pa.float64()),
            "t_detect": pa.array(np.full(n, t_detect), pa.float64()),
        },
        schema=DETECTED,
    )
