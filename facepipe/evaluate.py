"""Detection evaluation: ground-truth readers and matching rules.

dlib's imglab boxes (``<box top left width height>``) are tight eyes-to-mouth squares, smaller
than detector boxes, so a ground-truth face counts as found when a detection's IoU with it is
>= 0.3 *or* the detection's centre lies inside it (``match_dlib``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def load_imglab(xml_path: str | Path) -> dict[str, np.ndarray]:
    """imglab XML -> {image file: (N, 4) float32 xyxy boxes}; boxes marked ignore are dropped."""
    out: dict[str, np.ndarray] = {}
    for im in ET.parse(xml_path).getroot().iter("image"):
        boxes = [
            (float(b.get("left")), float(b.get("top")), float(b.get("left")) + float(b.get("width")), float(b.get("top")) + float(b.get("height")))
            for b in im.iter("box")
            if b.get("ignore", "0") != "1"
        ]
        out[im.get("file")] = np.asarray(boxes, np.float32).reshape(-1, 4)
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) xyxy -> (N, M) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_dlib(gt: np.ndarray, det: np.ndarray, iou_threshold: float = 0.3) -> np.ndarray:
    """(N, M) bool: detection m finds ground-truth face n (IoU >= 0.3 or centre inside)."""
    cx = (det[:, 0] + det[:, 2]) / 2
    cy = (det[:, 1] + det[:, 3]) / 2
    inside = (gt[:, None, 0] <= cx) & (cx <= gt[:, None, 2]) & (gt[:, None, 1] <= cy) & (cy <= gt[:, None, 3])
    return (iou_matrix(gt, det) >= iou_threshold) | inside


@dataclass
class RecallReport:
    found: int
    total: int
    unmatched_detections: int

    @property
    def recall(self) -> float:
        return self.found / self.total if self.total else 1.0

    def __str__(self) -> str:
        return f"recall {self.found}/{self.total} = {self.recall:.3f}, unmatched detections {self.unmatched_detections}"


def recall_report(pairs: list[tuple[np.ndarray, np.ndarray]]) -> RecallReport:
    """Aggregate ``match_dlib`` over (ground truth, detections) pairs, one pair per image."""
    found = total = unmatched = 0
    for gt, det in pairs:
        m = match_dlib(gt, det) if len(gt) and len(det) else np.zeros((len(gt), len(det)), bool)
        found += int(m.any(axis=1).sum())
        total += len(gt)
        unmatched += int((~m.any(axis=0)).sum()) if len(det) else 0
    return RecallReport(found, total, unmatched)
