"""Box operations in plain torch (PyPI torchvision does not load beside the CPU torch here).

Boxes are ``(N, 4) float32`` in ``xyxy`` format with ``x1 <= x2`` and ``y1 <= y2``.
"""

from __future__ import annotations

import numpy as np
import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyxy -> (N,) areas; degenerate boxes have area 0."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4), (M, 4) xyxy -> (N, M) intersection over union (0 where the union is empty)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``.

    boxes (N, 4) xyxy, scores (N,). Returns int64 indices of the kept boxes, by decreasing score.
    A box is dropped when its IoU with a higher-scoring kept box is > ``iou_threshold``.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    over = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    n = over.shape[0]
    removed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):  # O(n) python steps over an O(n^2) matrix built in one torch op
        if removed[i]:
            continue
        keep.append(i)
        removed |= over[i]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS applied independently per value of ``idxs`` (N,) int64 (e.g. the image in a batch).

    Boxes of different groups are shifted apart so that they never overlap, then one NMS runs.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    span = boxes.max() - boxes.min() + 1
    shifted = boxes + (idxs.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
