"""A DROCC model and its artifact: the hyperparameters (:class:`DROCCConfig`), the network
(:class:`DROCCNet`, an MLP on standardised inputs) and the trained model (:class:`DROCCModel`:
network, radius, threshold, what its inputs are) with its ``.pt`` bytes and ``.json`` description.
Training is ``facepipe.stages.score.drocc.train_drocc``."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from facepipe.stages.score.density import EmbeddingDensity

#: 2: the artifact records its inputs (version 1 models scored identity embeddings); 3: and the
#: law of the confident faces' embeddings (``facepipe.stages.score.density``), when there was one
ARTIFACT_VERSION = 3
READABLE_VERSIONS = (2, 3)


@dataclass(frozen=True)
class DROCCConfig:
    """Hyperparameters; the defaults are justified in bench/RESULTS.md ("DROCC")."""

    radius: float | None = None
    radius_scale: float = 1.0
    radius_quantile: float = 0.5
    gamma: float = 2.0
    #: weight of the adversarial negatives' loss: 2 (not the paper's common 1) trains steadier
    #: over seeds and never collapsed between 1 and 8; 0.5 collapses (bench/RESULTS.md)
    lamda: float = 2.0
    learning_rate: float = 1e-3
    #: "constant" (default; measured better at 30 epochs), or "step", the reference trainer's:
    #: full rate through the CE epochs and the first 40% of the DROCC epochs, x0.1, x0.01 after 80%.
    lr_schedule: str = "constant"
    epochs: int = 30
    only_ce_epochs: int = 5
    #: 30 steps of 0.1: 10 of 0.3 train 3.5x faster and score the same on the one-class benchmark
    #: and faces, but miss outliers that sit in the training sample (bench/RESULTS.md)
    ascent_step_size: float = 0.1
    ascent_num_steps: int = 30
    project_every: int = 10
    noise_std: float = 1.0
    batch_size: int = 128
    hidden: int = 256
    depth: int = 2
    lf: bool = False
    #: training points at most (a seeded uniform sample of more): 20,000 faces train in ~73 s on
    #: one thread, a few percent of a large night (bench/RESULTS.md, outlier stage's time)
    max_train: int = 20_000
    seed: int = 0


class DROCCNet(nn.Module):
    """MLP on standardised inputs: ``depth`` x (Linear(hidden) + LeakyReLU(0.01)), then Linear(1)
    -> logit. (Leaky: with plain ReLU some runs collapsed to a constant output -- all units dead.)"""

    def __init__(self, dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.LeakyReLU(0.01)]
            d = hidden
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: standardised inputs (N, dim) -> logits (N,)."""
        return self.net(z).squeeze(-1)


@dataclass
class DROCCModel:
    """A trained model: the network, the config it was trained with, and the radius used."""

    net: DROCCNet
    config: DROCCConfig
    radius: float
    n_train: int
    #: Score above which a face is an outlier, and how it was chosen (set by the scoring stage).
    threshold: float = 0.0
    threshold_policy: str = "boundary"
    #: ``facepipe.stages.score.drocc.far_probe_auc`` at the end of training (None for artifacts
    #: written before it existed).
    far_probe_auc: float | None = None
    #: what each of the D input columns is (the scoring stage's ``FEATURES``); () for any table
    inputs: tuple[str, ...] = ()
    #: the confident faces' embedding law: the score's embedding term (None: no term)
    density: EmbeddingDensity | None = None

    @property
    def inverted(self) -> bool:
        """The model calls points far off the data *more* normal than the data: its scores would
        rank backwards (a run stopped soon after the CE-only epochs ends like this)."""
        return self.far_probe_auc is not None and self.far_probe_auc < 0.5

    @property
    def model_id(self) -> str:
        """``drocc@HASH12`` over the weights and config: changes whenever the model does."""
        return f"drocc@{hashlib.sha256(self.to_bytes()).hexdigest()[:12]}"

    @torch.inference_mode()
    def anomaly_scores(self, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """(N, D) inputs -> (N,) float32 ``-logit``: higher = more anomalous (0 = the boundary).

        Computed in float64 and rounded: a row's float32 score from a float32 matmul could
        change in the last bit with the other rows of its batch (BLAS kernels treat a batch's
        tail rows differently), so a face's score would depend on how rows were grouped."""
        net = copy.deepcopy(self.net).double().eval()
        out = np.empty(len(x), np.float32)
        for s in range(0, len(x), batch_size):
            z = net.standardize(torch.from_numpy(np.asarray(x[s : s + batch_size], np.float64)))
            out[s : s + len(z)] = (-net(z)).numpy()
        return out

    def _about(self) -> dict:
        """What the artifact and its description both record besides the weights."""
        return {
            "config": dataclasses.asdict(self.config),
            "radius": self.radius,
            "n_train": self.n_train,
            "threshold": self.threshold,
            "threshold_policy": self.threshold_policy,
            "far_probe_auc": self.far_probe_auc,
            "inputs": list(self.inputs),
            "embedding_law": None
            if self.density is None
            else {k: getattr(self.density, k) for k in ("n", "shrinkage", "median", "tail")}
            | {"dim": self.density.dim},
        }

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        about = self._about() | {"dim": int(self.net.mean.numel()), "state_dict": self.net.state_dict()}
        about["density"] = None if self.density is None else self.density.to_dict()
        torch.save({"version": ARTIFACT_VERSION, **about}, buf)
        return buf.getvalue()

    @staticmethod
    def from_bytes(data: bytes, source: str = "<bytes>") -> "DROCCModel":
        try:
            blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if blob.get("version") not in READABLE_VERSIONS:
                raise ValueError(f"artifact version {blob.get('version')}, expected one of {READABLE_VERSIONS}")
            cfg = DROCCConfig(**blob["config"])
            net = DROCCNet(blob["dim"], cfg.hidden, cfg.depth)
            net.load_state_dict(blob["state_dict"], strict=True)
        except Exception as e:  # noqa: BLE001 -- any malformed artifact is one clear error
            raise ValueError(f"{source} is not a facepipe DROCC model: {e}") from None
        probe = blob.get("far_probe_auc")
        return DROCCModel(
            net.eval(),
            cfg,
            float(blob["radius"]),
            int(blob["n_train"]),
            float(blob["threshold"]),
            str(blob["threshold_policy"]),
            None if probe is None else float(probe),
            tuple(str(c) for c in blob.get("inputs", [])),
            EmbeddingDensity.from_dict(blob["density"]) if blob.get("density") else None,
        )

    def describe(self) -> str:
        return json.dumps({"model_id": self.model_id, **self._about()}, indent=2)
