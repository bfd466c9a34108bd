"""Detection evaluation: ground-truth readers, matching rules, recall / precision / AP.

Ground truth: dlib's imglab XML (:func:`load_imglab`) and WIDER FACE's
``wider_face_val_bbx_gt.txt`` (:func:`load_wider`). Matching: IoU >= 0.5 (WIDER/VOC), or, for
imglab boxes, dlib's rule -- its boxes are tight eyes-to-mouth squares, smaller than detector
boxes, so a face counts as found when a detection's IoU with it is >= 0.3 *or* the detection's
centre lies inside it (``match_dlib``). :func:`evaluate` matches greedily by decreasing score
(each face at most once, "ignore" faces neither rewarded nor penalised) and reports recall and
precision at an operating threshold plus the all-point-interpolated average precision.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from facepipe.stages.decode import DecodeConfig


@dataclass(frozen=True)
class GroundTruth:
    """Faces of one image: boxes (N, 4) float32 xyxy, ignore (N,) bool (don't-care faces)."""

    boxes: np.ndarray
    ignore: np.ndarray

    @property
    def counted(self) -> np.ndarray:
        return self.boxes[~self.ignore]


def load_imglab_gt(xml_path: str | Path) -> dict[str, GroundTruth]:
    """imglab XML -> {image file: GroundTruth}; ``ignore='1'`` boxes are don't-care."""
    out: dict[str, GroundTruth] = {}
    for im in ET.parse(xml_path).getroot().iter("image"):
        rows = [
            (
                float(b.get("left")),
                float(b.get("top")),
                float(b.get("left")) + float(b.get("width")),
                float(b.get("top")) + float(b.get("height")),
                b.get("ignore", "0") == "1",
            )
            for b in im.iter("box")
        ]
        a = np.asarray([r[:4] for r in rows], np.float32).reshape(-1, 4)
        out[im.get("file")] = GroundTruth(a, np.asarray([r[4] for r in rows], bool))
    return out


def load_imglab(xml_path: str | Path) -> dict[str, np.ndarray]:
    """imglab XML -> {image file: (N, 4) float32 xyxy boxes}; boxes marked ignore are dropped."""
    return {k: g.counted for k, g in load_imglab_gt(xml_path).items()}


def load_wider(txt_path: str | Path) -> dict[str, GroundTruth]:
    """WIDER FACE ground truth (``wider_face_val_bbx_gt.txt``) -> {relative image path: GroundTruth}.

    Per image: its path, the face count, then one line per face ``x y w h blur expression
    illumination invalid occlusion pose``; an image with no faces has count 0 and one line of
    zeros. Faces marked invalid, or of zero size, are don't-care.
    """
    lines = [line.strip() for line in Path(txt_path).read_text().splitlines()]
    out: dict[str, GroundTruth] = {}
    i = 0
    try:
        while i < len(lines):
            if not lines[i]:
                i += 1
                continue
            name, n = lines[i], int(lines[i + 1])
            rows = [list(map(float, lines[i + 2 + k].split()[:10])) for k in range(max(n, 1))]
            i += 2 + max(n, 1)
            rows = rows[:n]
            a = np.asarray([[r[0], r[1], r[0] + r[2], r[1] + r[3]] for r in rows], np.float32).reshape(-1, 4)
            ignore = np.asarray([(len(r) > 7 and r[7] == 1) or r[2] <= 0 or r[3] <= 0 for r in rows], bool)
            out[name] = GroundTruth(a, ignore)
    except (IndexError, ValueError) as e:
        raise ValueError(f"{txt_path}: not WIDER FACE ground truth near line {i + 1} ({e})") from None
    return out


def load_ground_truth(path: str | Path, fmt: str = "auto") -> tuple[dict[str, GroundTruth], str]:
    """(ground truth, format) of an imglab XML or WIDER txt file; ``fmt`` auto-detects by content."""
    path = Path(path)
    if fmt == "auto":
        fmt = "imglab" if path.read_bytes()[:512].lstrip().startswith(b"<") else "wider"
    if fmt == "imglab":
        return load_imglab_gt(path), fmt
    if fmt == "wider":
        return load_wider(path), fmt
    raise ValueError(f"unknown ground-truth format {fmt!r}; known: auto, imglab, wider")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) xyxy -> (N, M) IoU: ``detect.ops.box_iou`` on numpy arrays."""
    import torch

    from facepipe.stages.detect.ops import box_iou

    return box_iou(torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b))).numpy()


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


@dataclass
class DetectionReport:
    """Recall and precision at the operating threshold, AP over all scores."""

    rule: str
    images: int
    faces: int
    detections: int  # at the operating threshold
    true_positives: int
    false_positives: int
    ap: float

    @property
    def recall(self) -> float:
        return self.true_positives / self.faces if self.faces else 1.0

    @property
    def precision(self) -> float:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else 1.0

    def row(self) -> str:
        return (
            f"{self.rule:16s} faces {self.faces:5d}  detections {self.detections:5d}  recall {self.recall:.3f}  "
            f"precision {self.precision:.3f}  AP {self.ap:.3f}"
        )


def _match_image(gt: GroundTruth, boxes: np.ndarray, scores: np.ndarray, rule: str) -> np.ndarray:
    """Per detection (in decreasing score order): 1 true positive, 0 false positive, -1 ignored."""
    order = np.argsort(-scores, kind="stable")
    out = np.zeros(len(boxes), np.int8)
    if not len(gt.boxes) or not len(boxes):
        return out
    iou = iou_matrix(gt.boxes, boxes)
    ok = match_dlib(gt.boxes, boxes) if rule == "dlib" else iou >= 0.5
    taken = np.zeros(len(gt.boxes), bool)
    for rank, d in enumerate(order):
        cand = ok[:, d] & ~taken & ~gt.ignore
        if cand.any():
            g = int(np.argmax(np.where(cand, iou[:, d], -1.0)))
            taken[g] = True
            out[rank] = 1
        elif (ok[:, d] & gt.ignore).any():
            out[rank] = -1
    return out


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+ / WIDER): area under the monotone precision envelope."""
    r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def evaluate(
    gt: dict[str, GroundTruth],
    detections: dict[str, tuple[np.ndarray, np.ndarray]],
    rule: str = "iou",
    score_threshold: float = 0.5,
) -> DetectionReport:
    """Match ``detections`` ({image: (boxes (M, 4) xyxy, scores (M,))}, typically from a low
    threshold) against ``gt`` with ``rule`` ``iou`` (IoU >= 0.5) or ``dlib``."""
    outcomes, all_scores, n_faces = [], [], 0
    for name, g in gt.items():
        boxes, scores = detections.get(name, (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
        outcomes.append(_match_image(g, boxes, scores, rule))
        all_scores.append(np.sort(scores)[::-1])
        n_faces += int((~g.ignore).sum())
    res = np.concatenate(outcomes) if outcomes else np.zeros(0, np.int8)
    sc = np.concatenate(all_scores) if all_scores else np.zeros(0, np.float32)
    keep = res >= 0
    res, sc = res[keep], sc[keep]
    order = np.argsort(-sc, kind="stable")
    tp = np.cumsum(res[order] == 1)
    fp = np.cumsum(res[order] == 0)
    recall = tp / max(n_faces, 1)
    precision = tp / np.maximum(tp + fp, 1)
    at = sc >= score_threshold
    return DetectionReport(
        rule=rule if rule == "dlib" else "IoU>=0.5",
        images=len(gt),
        faces=n_faces,
        detections=int(at.sum()),
        true_positives=int((res[at] == 1).sum()),
        false_positives=int((res[at] == 0).sum()),
        ap=average_precision(recall, precision) if len(sc) else 0.0,
    )


def detect_for_eval(
    detector,
    images_root: str | Path,
    names: list[str],
    decode: DecodeConfig | None = None,
    score_threshold: float = 0.02,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Run ``detector`` as the job does (same decode, resize, batching) on ``images_root/NAME``
    for every name, keeping detections down to ``score_threshold`` (low, for AP). ``decode``
    defaults to the job's ``DecodeConfig()``."""
    from facepipe.stages.decode import DecodeConfig, decode_image

    decode = decode or DecodeConfig()
    from facepipe.stages.detect.stage import DetectConfig, detect_images

    cfg = DetectConfig(score_threshold=score_threshold)
    out = {}
    for name in names:
        path = Path(images_root) / name
        if not path.is_file():
            raise FileNotFoundError(f"image {path} (named in the ground truth) not found")
        d = decode_image(path.read_bytes(), decode)
        (found,) = detect_images(detector, [d.pixels], [(d.scale_x, d.scale_y)], [(d.width, d.height)], cfg)
        out[name] = (found.boxes, found.scores)
    return out
