"""What every face embedder shares: the chip it wants, input normalisation, batched inference.

A model file subclasses :class:`FaceEmbedder`, sets the class attributes describing its output
(``dim``, ``normalized``, ``same_person_threshold``), registers its :class:`ChipSpec` in its
``Preprocess`` (the registry is the one place that says how a model's input is made), and
implements ``forward`` on a normalised (B, 3, S, S) tensor.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facepipe.registry import ChipSpec, Preprocess

__all__ = ["ChipSpec", "FaceEmbedder"]


class FaceEmbedder(nn.Module):
    """Base class of registered embedders; see the module docstring."""

    model_id: str = "unregistered"
    preprocess: Preprocess = Preprocess()
    dim: int
    #: True when embeddings are L2-normalised (then distance = sqrt(2 - 2 cos)).
    normalized: bool
    #: Euclidean distance below which two faces are taken to be the same person.
    same_person_threshold: float

    @property
    def chip(self) -> ChipSpec:
        if self.preprocess.chip is None:
            raise ValueError(f"{self.model_id}: no chip spec; build embedders with facepipe.registry.create_model")
        return self.preprocess.chip

    def to_input(self, chips: np.ndarray) -> torch.Tensor:
        """(N, S, S, 3) uint8 RGB chips -> (N, 3, S, S) float tensor, normalised, on the model's device."""
        p = self.preprocess
        if chips.ndim != 4 or chips.shape[1:] != (self.chip.size, self.chip.size, 3):
            raise ValueError(
                f"{self.model_id} expects (N, {self.chip.size}, {self.chip.size}, 3) chips, got {chips.shape}"
            )
        device = next(self.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(chips)).to(device, non_blocking=True)
        if p.channel_order == "BGR":
            x = x.flip(-1)
        x = x.permute(0, 3, 1, 2).float()
        mean = torch.tensor(p.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(p.std, device=device).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def embed(self, chips: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB chips -> (N, dim) float32 embeddings; N may be 0.

        Each chip's embedding is independent of the others in the call (no batch statistics).
        """
        out = np.zeros((len(chips), self.dim), np.float32)
        for s in range(0, len(chips), batch_size):
            y = self(self.to_input(chips[s : s + batch_size])).float()
            if self.normalized:
                y = nn.functional.normalize(y, dim=1)
            out[s : s + len(y)] = y.cpu().numpy()
        return out
