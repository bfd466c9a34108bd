"""Clustering quality against known labels: pairwise and BCubed precision/recall/F, NMI, merges.

All functions take ``pred`` (cluster id per item; ``None``/negative = unassigned, counted as its
own singleton) and ``true`` (label per item), both sequences of hashables of equal length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np


def _codes(values: Sequence[Hashable], singletons_for_none: bool) -> np.ndarray:
    out, seen = np.empty(len(values), np.int64), {}
    nxt = 0
    for i, v in enumerate(values):
        if singletons_for_none and (v is None or (isinstance(v, (int, np.integer)) and v < 0)):
            key = ("__unassigned__", i)
        else:
            key = v
        if key not in seen:
            seen[key] = nxt
            nxt += 1
        out[i] = seen[key]
    return out


def contingency(pred: Sequence[Hashable], true: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero cells of the (cluster, label) count table, as ``(cluster, label, count)``
    arrays -- sparse, so a million faces in a hundred thousand clusters fit."""
    if len(pred) != len(true):
        raise ValueError(f"{len(pred)} predictions for {len(true)} labels")
    p, t = _codes(pred, True), _codes(true, False)
    span = int(t.max()) + 1 if len(t) else 1
    key, count = np.unique(p * span + t, return_counts=True)
    return key // span, key % span, count.astype(np.float64)


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(frozen=True)
class ClusterReport:
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    nmi: float
    merged_label_errors: int  # sum over clusters of (distinct labels - 1)
    n_clusters: int
    n_labels: int

    def __str__(self) -> str:
        return (
            f"pairwise P/R/F {self.pairwise_precision:.4f}/{self.pairwise_recall:.4f}/{self.pairwise_f:.4f}  "
            f"BCubed P/R/F {self.bcubed_precision:.4f}/{self.bcubed_recall:.4f}/{self.bcubed_f:.4f}  "
            f"NMI {self.nmi:.4f}  merged-label errors {self.merged_label_errors}  "
            f"clusters {self.n_clusters} for {self.n_labels} labels"
        )


def evaluate_clusters(pred: Sequence[Hashable], true: Sequence[Hashable]) -> ClusterReport:
    rows, cols, c = contingency(pred, true)
    n = c.sum()
    if n == 0:
        return ClusterReport(1, 1, 1, 1, 1, 1, 1, 0, 0, 0)
    r = np.bincount(rows, weights=c)  # cluster sizes
    s = np.bincount(cols, weights=c)  # label sizes
    pairs = lambda x: float((x * (x - 1) / 2).sum())  # noqa: E731
    tp, same_cluster, same_label = pairs(c), pairs(r), pairs(s)
    pp = tp / same_cluster if same_cluster else 1.0
    pr = tp / same_label if same_label else 1.0
    # BCubed: item i's precision = |cluster & label| / |cluster|, averaged over items
    bp = float((c * c / r[rows]).sum() / n)
    br = float((c * c / s[cols]).sum() / n)
    # NMI with the arithmetic mean of the entropies (scikit-learn's default)
    mi = float((c / n * np.log(c * n / (r[rows] * s[cols]))).sum())
    h = lambda x: float(-(x[x > 0] / n * np.log(x[x > 0] / n)).sum())  # noqa: E731
    hp, ht = h(r), h(s)
    nmi = 1.0 if hp == ht == 0 else (mi / ((hp + ht) / 2) if hp + ht else 0.0)
    merged = int((np.bincount(rows) - 1).clip(min=0).sum())
    return ClusterReport(float(pp), float(pr), _f(pp, pr), bp, br, _f(bp, br), float(nmi), merged, len(r), len(s))


def load_labels(path: str) -> dict[tuple[str, int | None], str]:
    """Label CSV -> {(image_id or source_uri, face_index or None): label}.

    Columns: ``image_id`` or ``source_uri`` (either name; a header row is required), ``label``,
    optionally ``face_index`` (needed only for images with several faces)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no labelled rows")
    key = "image_id" if "image_id" in rows[0] else "source_uri" if "source_uri" in rows[0] else None
    if key is None or "label" not in rows[0]:
        raise ValueError(f"{path}: needs a header with image_id or source_uri, and label (got {list(rows[0])})")
    out = {}
    for r in rows:
        fi = r.get("face_index")
        out[(r[key], int(fi) if fi not in (None, "") else None)] = r["label"]
    return out


def labelled_faces(
    faces: list[tuple[str, str, int, str | None]], labels: dict[tuple[str, int | None], str]
) -> tuple[list, list]:
    """faces: (image_id, source_uri, face_index, identity_id) rows -> (pred, true) of the faces the
    labels name: a label without face_index covers an image with exactly one face."""
    per_image: dict[str, int] = {}
    for image_id, _, _, _ in faces:
        per_image[image_id] = per_image.get(image_id, 0) + 1
    pred, true = [], []
    for image_id, uri, k, ident in faces:
        for key in (image_id, uri):
            lab = labels.get((key, k))
            if lab is None and per_image[image_id] == 1:
                lab = labels.get((key, None))
            if lab is not None:
                pred.append(ident)
                true.append(lab)
                break
    return pred, true
