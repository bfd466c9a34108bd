"""What every face detector shares: batching (pad to a common size), normalisation from the
registered :class:`~facepipe.registry.Preprocess`, NMS, and clipping.

A model file subclasses :class:`FaceDetector` and implements ``forward`` (raw network outputs) and
``decode`` (raw outputs -> candidate boxes, scores, landmarks in input-tensor pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from facepipe.registry import Preprocess
from facepipe.stages.detect.ops import batched_nms


@dataclass
class Detections:
    """Faces found in one image, by decreasing score.

    boxes (N, 4) float32 xyxy, scores (N,) float32, landmarks (N, 5, 2) float32 (x, y) in the order
    left eye, right eye, nose, left mouth corner, right mouth corner ("left" = smaller x in the image).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def scaled(self, sx: float, sy: float) -> "Detections":
        """Coordinates divided by (sx, sy): maps detector-input pixels back to the original image."""
        f = np.array([sx, sy], np.float32)
        return Detections(
            (self.boxes.reshape(-1, 2, 2) / f).reshape(-1, 4).astype(np.float32),
            self.scores,
            (self.landmarks / f).astype(np.float32),
        )


@dataclass(frozen=True)
class Candidates:
    """Raw decoded candidates of a whole batch, before NMS, in input-tensor pixels.

    boxes (K, 4), scores (K,), landmarks (K, 5, 2), image_index (K,) int64 into the batch.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor
    image_index: torch.Tensor


class FaceDetector(nn.Module):
    """Base class of registered detectors; see the module docstring."""

    model_id: str = "unregistered"
    preprocess: Preprocess = Preprocess()
    #: On CPU, at most this many input pixels per forward pass (None: ``batch_size`` images). A
    #: network with large early activations runs slower batched on CPU once they leave the cache.
    cpu_batch_pixels: int | None = None

    def decode(self, raw: Any, score_threshold: float) -> Candidates:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_input(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Pad (H, W, 3) uint8 RGB images to one (B, 3, H, W) float tensor, normalised.

        Images sit at the top-left corner; H and W are the batch maxima rounded up to
        ``preprocess.pad_multiple``; padding is 0 in the normalised tensor.
        """
        p = self.preprocess
        m = p.pad_multiple
        hmax = max(im.shape[0] for im in images)
        wmax = max(im.shape[1] for im in images)
        H, W = -(-hmax // m) * m, -(-wmax // m) * m
        buf = np.zeros((len(images), H, W, 3), np.uint8)
        for i, im in enumerate(images):
            buf[i, : im.shape[0], : im.shape[1]] = im
        if p.channel_order == "BGR":
            buf = buf[..., ::-1]
        device = next(self.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(buf)).to(device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        if any(p.mean) or any(s != 1.0 for s in p.std):
            mean = torch.tensor(p.mean, device=device).view(1, 3, 1, 1)
            std = torch.tensor(p.std, device=device).view(1, 3, 1, 1)
            pad = torch.zeros((len(images), 1, H, W), dtype=torch.bool, device=device)
            for i, im in enumerate(images):
                pad[i, :, im.shape[0] :, :] = True
                pad[i, :, :, im.shape[1] :] = True
            x = torch.where(pad, torch.zeros_like(x), (x - mean) / std)
        return x.contiguous(memory_format=torch.channels_last)

    def padded_shape(self, image: np.ndarray) -> tuple[int, int]:
        """(H, W) an image is padded to: its own size rounded up to ``pad_multiple``."""
        m = self.preprocess.pad_multiple
        return -(-image.shape[0] // m) * m, -(-image.shape[1] // m) * m

    @torch.inference_mode()
    def detect(
        self,
        images: Sequence[np.ndarray],
        score_threshold: float = 0.5,
        nms_threshold: float = 0.3,
        max_faces: int = 1000,
        batch_size: int = 8,
    ) -> list[Detections]:
        """Detect faces in (H, W, 3) uint8 RGB images of any sizes.

        Images are grouped by :meth:`padded_shape` and each group runs in forward passes of up
        to ``batch_size`` images (on CPU also at most ``cpu_batch_pixels``), so an image's
        result never depends on the other images in the call (zero padding to a larger
        neighbour would shift detections near its border).
        Returns one :class:`Detections` per image in that image's pixels, at most ``max_faces``
        per image. Boxes are clipped to the image; landmarks are not (a partial face's hidden
        eye may lie outside it).
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self.padded_shape(im), []).append(i)
        out: list[Detections] = [Detections.empty()] * len(images)
        on_cpu = next(self.parameters()).device.type == "cpu"
        for (h, w), idx in groups.items():
            per_pass = batch_size
            if on_cpu and self.cpu_batch_pixels:
                per_pass = max(1, min(batch_size, self.cpu_batch_pixels // (h * w)))
            for start in range(0, len(idx), per_pass):
                chunk = idx[start : start + per_pass]
                for i, d in zip(
                    chunk,
                    self._detect_same_shape([images[i] for i in chunk], score_threshold, nms_threshold, max_faces),
                ):
                    out[i] = d
        return out

    def _detect_same_shape(
        self, images: Sequence[np.ndarray], score_threshold: float, nms_threshold: float, max_faces: int
    ) -> list[Detections]:
        raw = self(self.to_input(images))
        c = self.decode(raw, score_threshold)
        keep = batched_nms(c.boxes, c.scores, c.image_index, nms_threshold)
        boxes, scores, lms, idx = (
            t[keep].float().cpu().numpy() for t in (c.boxes, c.scores, c.landmarks, c.image_index)
        )
        idx = idx.astype(np.int64)
        out = []
        for i, im in enumerate(images):
            sel = np.flatnonzero(idx == i)[:max_faces]  # keep order = decreasing score
            h, w = im.shape[:2]
            b = boxes[sel].copy()
            b[:, 0::2] = b[:, 0::2].clip(0, w)
            b[:, 1::2] = b[:, 1::2].clip(0, h)
            out.append(Detections(b.astype(np.float32), scores[sel].astype(np.float32), lms[sel].astype(np.float32)))
        return out
