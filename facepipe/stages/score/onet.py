"""A second opinion on every detection: MTCNN's output network (ONet, Zhang et al. 2016), a
small CNN trained to tell a 48x48 face crop from a non-face, with the weights ``facenet-pytorch``
2.6.0 ships (MIT, its ``data/onet.pt``), vendored as ``facepipe/weights/mtcnn_onet.pt`` (1.5 MB,
its licence beside it): facenet-pytorch pins torch < 2.3, so it cannot be a dependency, and a
runtime-env pip list cannot say ``--no-deps``. Written from the architecture; the key names are
those of the checkpoint.

The model actors run it on each detection's square crop (:func:`square_crops`: MTCNN's own
square around the box) next to the detector and embedder, and write its log-odds that the crop
is a face (``faces.face_logit``, :func:`face_logits`); the score stage adds it to DROCC's score.
Measured on real detections (bench/accuracy/outlier_scores.py): it separates non-faces from faces at AUC
0.9997 where the detector's own score reaches 0.993, and a CNN trained one-class on a run's face
chips with DROCC does not learn "a face" from the few distinct faces a run has (AUC 0.40-0.61).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from facepipe.registry import ModelSpec, Preprocess, WeightSource, load_state_dict_strict, register_model

CROP = 48


class ONet(nn.Module):
    """MTCNN's ONet: 48x48 RGB in (pixel - 127.5) / 128 -> (face logits (N, 2), box (N, 4), landmarks (N, 10))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        # the checkpoint comes from Caffe, whose flattening runs (W, H, C): permute before dense5
        h = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(len(x), -1)))
        return self.dense6_1(h), self.dense6_2(h), self.dense6_3(h)

    @torch.inference_mode()
    def face_logits(self, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, 48, 48, 3) uint8 RGB crops -> (N,) float32 log-odds that each is a face: the
        larger of the crop's and its grey version's (:func:`greyed`), both :func:`stretched`."""
        dev = next(self.parameters()).device
        out = np.empty(len(crops), np.float32)
        for s in range(0, len(crops), batch_size):
            part = crops[s : s + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(stretched(np.concatenate([part, greyed(part)])))).to(dev)
            x = (x.permute(0, 3, 1, 2).float() - 127.5) * 0.0078125
            logits = self(x)[0]
            odds = (logits[:, 1] - logits[:, 0]).float().cpu().numpy()
            out[s : s + len(part)] = np.maximum(odds[: len(part)], odds[len(part) :])
        return out


def greyed(crops: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 crops in grey (the channels' mean in each): ONet learnt faces in colour
    photos, and doubts a face of a tinted print (sepia, a green duotone) that it takes in grey.
    Measured on the group photos (bench/accuracy/group_outliers.py) and the evaluation set
    (bench/accuracy/outlier_scores.py): the larger of the two opinions leaves 3 usable faces
    below log-odds 0 where the colour crop alone left 7, at the same non-face AUC (0.9995)."""
    g = np.rint(np.asarray(crops, np.float32).mean(axis=-1, keepdims=True)).astype(np.uint8)
    return np.repeat(g, 3, axis=-1)


def stretched(crops: np.ndarray, spread: float = 160.0, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Each (N, H, W, 3) uint8 crop whose brightness spans less than ``spread`` grey levels
    (its ``low`` to ``high`` percentile: a faded or tinted photo) stretched to span that much,
    centred; crops of ordinary contrast are returned as they are."""
    x = np.asarray(crops, np.float32)
    grey = x.mean(axis=-1).reshape(len(x), -1)
    lo, hi = np.percentile(grey, [low, high], axis=1)
    scale = np.maximum(spread / np.maximum(hi - lo, 1.0), 1.0)[:, None, None, None]
    mid = ((lo + hi) / 2)[:, None, None, None]
    y = np.where(scale > 1, (x - mid) * scale + 127.5, x)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def square_crops(image: np.ndarray, boxes: np.ndarray, size: int = CROP) -> np.ndarray:
    """(N, size, size, 3) uint8: the square of side max(w, h) around each box (N, 4) xyxy of one
    (H, W, 3) uint8 image, zero outside the image, resized with area averaging (MTCNN's crops)."""
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    h, w = image.shape[:2]
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        side = max(x2 - x1, y2 - y1, 1.0)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        a, b = int(round(cx - side / 2)), int(round(cy - side / 2))
        n = max(int(round(side)), 1)
        square = np.zeros((n, n, 3), np.uint8)
        sx, sy, ex, ey = max(a, 0), max(b, 0), min(a + n, w), min(b + n, h)
        if ex > sx and ey > sy:
            square[sy - b : ey - b, sx - a : ex - a] = image[sy:ey, sx:ex]
        out[i] = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    return out


def build_onet(weights: Path) -> ONet:
    net = ONet()
    load_state_dict_strict(net, weights, "MTCNN's ONet")
    return net


ONET = register_model(
    ModelSpec(
        name="mtcnn_onet",
        kind="verifier",
        build=build_onet,
        weights=WeightSource(
            package="facepipe",
            filename="weights/mtcnn_onet.pt",
            sha256="165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
            license="MIT (facenet-pytorch 2.6.0, weights/LICENSE-facenet-pytorch.md; MTCNN by Zhang et al.)",
        ),
        preprocess=Preprocess(channel_order="RGB", mean=(127.5,) * 3, std=(128.0,) * 3),
        description="MTCNN's output network: face / non-face log-odds of a 48x48 crop (a second opinion)",
    )
)
