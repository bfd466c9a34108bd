"""DROCC: Deep Robust One-Class Classification (Goyal et al., ICML 2020), written from the paper.

Normal data is labelled 1 and trained with binary cross-entropy on logits. After
``only_ce_epochs`` epochs, every batch also gets adversarially searched negatives: starting from
``x + N(0, noise_std^2 I)``, ``ascent_num_steps`` steps of size ``ascent_step_size`` along the
per-sample-normalised gradient of BCE(f(x_adv), 0) -- i.e. towards points the model calls
normal -- with ``h = x_adv - x`` projected onto the shell ``r <= ||h|| <= gamma * r`` every
``project_every`` steps (10, as the reference trainer). The loss adds
``lamda * BCE(f(x_adv), 0)``: the model learns that everything at distance r..gamma*r from the
normal data is not normal, which is what keeps it from calling everything normal.

DROCC-LF (``lf=True``) measures ``h`` in a Mahalanobis-weighted norm ``sqrt(sum_i w_i h_i^2)``
whose weights are each feature's sensitivity ``|d BCE(f(x), 1) / d x_i|`` on the batch,
normalised to mean 1 per sample: the shell stretches along features the model ignores; the
projection onto it is the closest point in that norm's shell (bisection on the multiplier).

Inputs are standardised with the training data's mean and standard deviation (stored in the
model), so ``radius`` is in units of per-feature standard deviations; ``radius=None`` sets it
from the data (``radius_quantile`` of nearest-neighbour distances between training points,
times ``radius_scale``). Scores: ``anomaly_scores`` = ``-logit``: **higher = more anomalous**.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ARTIFACT_VERSION = 1
log = logging.getLogger(__name__)


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
    max_train: int = 100_000
    seed: int = 0


class DROCCNet(nn.Module):
    """MLP on standardised inputs: ``depth`` x (Linear(hidden) + LeakyReLU(0.01)), then Linear(1)
    -> logit. (Leaky: with plain ReLU some runs collapsed to a constant output -- all units dead.)"""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 2) -> None:
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


def project_to_shell(h: torch.Tensor, radius: float, gamma: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The closest point to each row of ``h`` (N, D) whose norm lies in [radius, gamma * radius];
    rows already inside are unchanged. Euclidean norm: a radial rescaling. ``weights`` (N, D) > 0:
    the norm is ``sqrt(sum w h^2)`` (DROCC-LF), and the closest point on the ellipsoid is
    ``h / (1 + mu * w)`` with the multiplier ``mu`` found by bisection -- it shortens ``h`` most
    along the heavily weighted features instead of keeping its direction."""
    if weights is None:
        norm = h.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return h * (norm.clamp(radius, gamma * radius) / norm)
    w = weights.clamp_min(1e-12)
    norm = (w * h * h).sum(dim=1, keepdim=True).sqrt()
    target = norm.clamp(radius, gamma * radius)
    shrink = norm > target
    # sum w (h / (1 + mu w))^2 falls as mu rises from -1/max(w): bracket the root on each side
    lo = torch.where(shrink, torch.zeros_like(norm), -(1 - 1e-6) / w.max(dim=1, keepdim=True).values)
    hi = torch.where(shrink, (norm / target - 1) / w.min(dim=1, keepdim=True).values, torch.zeros_like(norm))
    for _ in range(80):
        mu = (lo + hi) / 2
        above = (w * (h / (1 + mu * w)) ** 2).sum(dim=1, keepdim=True).sqrt() > target
        lo, hi = torch.where(above, mu, lo), torch.where(above, hi, mu)
    p = h / (1 + (lo + hi) / 2 * w)
    reached = ((w * p * p).sum(dim=1, keepdim=True).sqrt() - target).abs() <= 1e-3 * target
    radial = h * (target / norm.clamp_min(1e-12))  # degenerate rows (h ~ 0 on the heaviest features)
    return torch.where(norm == target, h, torch.where(reached, p, radial))


def _unit_rows(g: torch.Tensor) -> torch.Tensor:
    n = g.flatten(1).norm(dim=1).view(-1, *[1] * (g.dim() - 1))
    return torch.where(n > 0, g / n.clamp_min(1e-12), torch.zeros_like(g))


def feature_weights(model: DROCCNet, z: torch.Tensor) -> torch.Tensor:
    """DROCC-LF's per-sample feature sensitivities |d BCE(f(z), 1) / dz|, normalised to mean 1."""
    z = z.detach().requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(model(z), torch.ones(len(z), device=z.device))
    g = torch.autograd.grad(loss, z)[0].abs()
    return g / g.mean(dim=1, keepdim=True).clamp_min(1e-12)


def adversarial_search(
    model: DROCCNet, z: torch.Tensor, radius: float, cfg: DROCCConfig, generator: torch.Generator
) -> torch.Tensor:
    """Points at distance [r, gamma r] of the batch ``z`` that the model most believes normal."""
    weights = feature_weights(model, z) if cfg.lf else None
    noise = torch.randn(z.shape, generator=generator, device=z.device) * cfg.noise_std
    x_adv = (z + noise).detach()
    zeros = torch.zeros(len(z), device=z.device)
    for step in range(cfg.ascent_num_steps):
        x_adv.requires_grad_(True)
        loss = F.binary_cross_entropy_with_logits(model(x_adv), zeros)
        grad = torch.autograd.grad(loss, x_adv)[0]
        with torch.no_grad():
            x_adv = x_adv + cfg.ascent_step_size * _unit_rows(grad)
            if (step + 1) % cfg.project_every == 0:
                x_adv = z + project_to_shell(x_adv - z, radius, cfg.gamma, weights)
        x_adv = x_adv.detach()
    if cfg.ascent_num_steps % cfg.project_every:  # end on the shell whatever the step count
        x_adv = z + project_to_shell(x_adv - z, radius, cfg.gamma, weights)
    return x_adv


def auto_radius(z: np.ndarray, quantile: float = 0.5, sample: int = 2000, seed: int = 0) -> float:
    """``quantile`` of the distances from (a sample of) standardised points to their nearest other point."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(z), min(sample, len(z)), replace=False)
    zs = torch.from_numpy(z[idx]).float()
    d = torch.cdist(zs, torch.from_numpy(z).float())
    d[torch.arange(len(idx)), torch.from_numpy(idx)] = float("inf")
    return float(torch.quantile(d.min(dim=1).values, quantile))


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
    #: :func:`far_probe_auc` at the end of training (None for artifacts written before it existed).
    far_probe_auc: float | None = None

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
        """(N, D) inputs -> (N,) float32 ``-logit``: higher = more anomalous (0 = the boundary)."""
        self.net.eval()
        out = np.empty(len(x), np.float32)
        for s in range(0, len(x), batch_size):
            z = self.net.standardize(torch.from_numpy(np.asarray(x[s : s + batch_size], np.float32)))
            out[s : s + len(z)] = (-self.net(z)).numpy()
        return out

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(
            {
                "version": ARTIFACT_VERSION,
                "config": dataclasses.asdict(self.config),
                "radius": self.radius,
                "n_train": self.n_train,
                "threshold": self.threshold,
                "threshold_policy": self.threshold_policy,
                "far_probe_auc": self.far_probe_auc,
                "dim": int(self.net.mean.numel()),
                "state_dict": self.net.state_dict(),
            },
            buf,
        )
        return buf.getvalue()

    @staticmethod
    def from_bytes(data: bytes, source: str = "<bytes>") -> "DROCCModel":
        try:
            blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if blob.get("version") != ARTIFACT_VERSION:
                raise ValueError(f"artifact version {blob.get('version')}, expected {ARTIFACT_VERSION}")
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
        )

    def describe(self) -> str:
        return json.dumps(
            {
                "model_id": self.model_id,
                "radius": self.radius,
                "n_train": self.n_train,
                "threshold": self.threshold,
                "threshold_policy": self.threshold_policy,
                "far_probe_auc": self.far_probe_auc,
                "config": dataclasses.asdict(self.config),
            },
            indent=2,
        )


@torch.no_grad()
def far_probe_auc(
    net: DROCCNet, z: torch.Tensor, radius: float, gamma: float, seed: int = 0, sample: int = 2000
) -> float:
    """Label-free sanity check of a trained model: the share of (training point, probe) pairs in
    which the probe -- the point moved ``2 * gamma * radius`` in a random direction, beyond every
    shell -- scores as more anomalous. About 1 for a working model; about 0 for an inverted one,
    which is what training only on "normal" (the CE-only epochs) produces: BCE towards 1 raises the
    logit most where hidden activations are largest, far from the data (bench/RESULTS.md)."""
    gen = torch.Generator(device=z.device).manual_seed(seed)
    if len(z) > sample:
        z = z[torch.randperm(len(z), generator=gen, device=z.device)[:sample]]
    h = torch.randn(z.shape, generator=gen, device=z.device)
    probes = z + h * (2 * gamma * radius / h.norm(dim=1, keepdim=True).clamp_min(1e-12))
    net.eval()
    s_data, s_probe = -net(z), -net(probes)
    above = (s_probe[:, None] > s_data[None]).double().mean()
    tied = (s_probe[:, None] == s_data[None]).double().mean()
    return float(above + tied / 2)


def learning_rate_at(epoch: int, cfg: DROCCConfig) -> float:
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    k = (epoch - cfg.only_ce_epochs) / max(cfg.epochs - cfg.only_ce_epochs, 1)
    return cfg.learning_rate * (1.0 if k <= 0.4 else 0.1 if k <= 0.8 else 0.01)


def train_drocc(x: np.ndarray, cfg: DROCCConfig = DROCCConfig(), device: str = "cpu") -> DROCCModel:
    """Train on normal data ``x`` (N, D) (subsampled to ``max_train``); deterministic for a seed."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x = np.asarray(x, np.float32)
    if len(x) > cfg.max_train:
        x = x[np.sort(rng.choice(len(x), cfg.max_train, replace=False))]
    if len(x) < 2:
        raise ValueError(f"DROCC needs at least 2 training points, got {len(x)}")
    net = DROCCNet(x.shape[1], cfg.hidden, cfg.depth).to(device)
    mean, std = x.mean(0), x.std(0)
    net.mean.copy_(torch.from_numpy(mean))
    net.std.copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0).astype(np.float32)))
    z_all = ((x - mean) / net.std.cpu().numpy()).astype(np.float32)
    radius = (
        cfg.radius
        if cfg.radius is not None
        else auto_radius(z_all, cfg.radius_quantile, seed=cfg.seed) * cfg.radius_scale
    )
    z_t = torch.from_numpy(z_all).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    for epoch in range(cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = learning_rate_at(epoch, cfg)
        net.train()
        perm = torch.randperm(len(z_t), generator=gen, device=device)
        for s in range(0, len(z_t), cfg.batch_size):
            z = z_t[perm[s : s + cfg.batch_size]]
            loss = F.binary_cross_entropy_with_logits(net(z), torch.ones(len(z), device=device))
            if epoch >= cfg.only_ce_epochs:
                x_adv = adversarial_search(net, z, radius, cfg, gen)
                loss = loss + cfg.lamda * F.binary_cross_entropy_with_logits(
                    net(x_adv), torch.zeros(len(z), device=device)
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
    probe = far_probe_auc(net, z_t, float(radius), cfg.gamma, cfg.seed)
    model = DROCCModel(net.cpu().eval(), cfg, float(radius), len(x), far_probe_auc=probe)
    if model.inverted:
        log.warning(
            "DROCC model is inverted (far-probe AUC %.3f < 0.5): it scores points far off the data as normal; "
            "train for more epochs after the %d CE-only ones",
            probe,
            cfg.only_ce_epochs,
        )
    return model
