"""Box ops against slow, obvious references (as torchvision's test_ops does)."""

import numpy as np
import torch

from facepipe.stages.detect.ops import batched_nms, box_iou, nms


def _iou_slow(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _nms_slow(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(_iou_slow(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def _random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 30 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def test_box_iou_matches_reference():
    a, _ = _random_boxes(20, 0)
    b, _ = _random_boxes(15, 1)
    ref = np.array([[_iou_slow(x.tolist(), y.tolist()) for y in b] for x in a])
    np.testing.assert_allclose(box_iou(a, b).numpy(), ref, atol=1e-6)


def test_nms_matches_greedy_reference():
    for seed in range(5):
        boxes, scores = _random_boxes(200, seed)
        for thr in (0.1, 0.3, 0.5, 0.7):
            assert nms(boxes, scores, thr).tolist() == _nms_slow(boxes.tolist(), scores.tolist(), thr)


def test_nms_empty_returns_typed_empty():
    keep = nms(torch.zeros((0, 4)), torch.zeros((0,)), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64


def test_batched_nms_never_suppresses_across_groups():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    idxs = torch.tensor([0, 1, 0])
    # box 1 is identical to box 0 but in another image: kept. Box 2 overlaps box 0 in image 0: dropped.
    assert sorted(batched_nms(boxes, scores, idxs, 0.5).tolist()) == [0, 1]
