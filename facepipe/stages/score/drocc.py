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

import logging

import numpy as np
import torch
from torch.nn import functional as F

from facepipe.stages.score.model import DROCCConfig, DROCCModel, DROCCNet

__all__ = ["DROCCConfig", "DROCCModel", "DROCCNet", "train_drocc", "adversarial_search", "project_to_shell"]
log = logging.getLogger(__name__)


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


def train_drocc(x: np.ndarray, cfg: DROCCConfig | None = None, device: str = "cpu") -> DROCCModel:
    """Train on normal data ``x`` (N, D) (subsampled to ``max_train``); deterministic for a seed."""
    cfg = cfg or DROCCConfig()
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
