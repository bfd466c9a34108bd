"""DROCC trainer pieces: the shell projection, the adversarial ascent, determinism, artifacts."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from facepipe.stages.score.drocc import (
    DROCCConfig,
    DROCCModel,
    DROCCNet,
    adversarial_search,
    project_to_shell,
    train_drocc,
)


def test_projection_puts_every_norm_in_the_shell():
    torch.manual_seed(0)
    h = torch.randn(500, 16) * torch.logspace(-2, 2, 500)[:, None]  # norms from tiny to huge
    p = project_to_shell(h, 2.5, 2.0)
    n = p.norm(dim=1)
    assert (n >= 2.5 - 1e-4).all() and (n <= 5.0 + 1e-4).all()
    inside = (h.norm(dim=1) >= 2.5) & (h.norm(dim=1) <= 5.0)
    assert torch.allclose(p[inside], h[inside])  # already in the shell: unchanged
    assert torch.allclose(torch.nn.functional.cosine_similarity(p, h), torch.ones(500), atol=1e-5)  # direction kept


def test_weighted_projection_uses_the_mahalanobis_norm():
    torch.manual_seed(0)
    h = torch.randn(300, 8) * torch.logspace(-2, 2, 300)[:, None]
    w = torch.rand(300, 8) * 2 + 0.01
    p = project_to_shell(h, 1.0, 3.0, w)
    n = (w * p * p).sum(dim=1).sqrt()
    assert (n >= 1 - 1e-3).all() and (n <= 3 + 1e-3).all()
    nh = (w * h * h).sum(dim=1).sqrt()
    inside = (nh >= 1) & (nh <= 3)
    assert torch.equal(p[inside], h[inside])


def test_weighted_projection_is_the_closest_point_of_the_weighted_shell():
    """DROCC-LF projects onto the Mahalanobis shell, not by radial rescaling: no point of the
    target ellipsoid is nearer (Euclidean) to h, and the Lagrange condition p - h || w * p holds."""
    torch.manual_seed(1)
    h = torch.randn(64, 6) * torch.tensor([0.05, 8.0]).repeat(32)[:, None]  # half inside, half outside
    w = torch.rand(64, 6) * 3 + 0.05
    p = project_to_shell(h, 1.0, 2.0, w)
    target = (w * p * p).sum(dim=1, keepdim=True).sqrt()
    # many points on each row's target ellipsoid: random directions scaled to that weighted norm
    d = torch.randn(64, 20000, 6)
    d = d * (target[:, None] / (w[:, None] * d * d).sum(-1, keepdim=True).sqrt())
    best = (d - h[:, None]).norm(dim=-1).min(dim=1).values
    assert ((p - h).norm(dim=1) <= best + 1e-4).all()
    radial = h * (target / (w * h * h).sum(dim=1, keepdim=True).sqrt())
    assert ((p - h).norm(dim=1) <= (radial - h).norm(dim=1) + 1e-5).all()
    assert ((p - h).norm(dim=1) < (radial - h).norm(dim=1) - 1e-3).float().mean() > 0.5  # and usually strictly
    cos = F.cosine_similarity(p - h, w * p)
    assert (cos.abs() > 1 - 1e-3).all()


def test_uniform_weights_project_like_the_euclidean_shell():
    torch.manual_seed(2)
    h = torch.randn(100, 10) * torch.logspace(-1, 1, 100)[:, None]
    assert torch.allclose(project_to_shell(h, 2.0, 2.0, torch.ones_like(h)), project_to_shell(h, 2.0, 2.0), atol=1e-4)


def test_ascent_increases_the_loss_of_calling_points_abnormal():
    """The search moves points towards where the model says "normal", i.e. up BCE(f(x), 0)."""
    torch.manual_seed(0)
    net = DROCCNet(8, 32, 2)
    z = torch.randn(64, 8)
    cfg = DROCCConfig(ascent_num_steps=20, ascent_step_size=0.1, radius=1.0)
    gen = torch.Generator().manual_seed(0)
    start = z + torch.randn(z.shape, generator=torch.Generator().manual_seed(0)) * cfg.noise_std
    start = z + project_to_shell(start - z, 1.0, cfg.gamma)
    adv = adversarial_search(net, z, 1.0, cfg, gen)
    zeros = torch.zeros(len(z))
    with torch.no_grad():
        assert F.binary_cross_entropy_with_logits(net(adv), zeros) > F.binary_cross_entropy_with_logits(
            net(start), zeros
        )
    d = (adv - z).norm(dim=1)
    assert (d >= 1.0 - 1e-4).all() and (d <= 2.0 + 1e-4).all()


def _blob(seed=0, n=300):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32) * [1, 1, 1, 0.1, 0.1, 0.1]


def test_same_seed_same_model_and_scores():
    cfg = DROCCConfig(epochs=6, only_ce_epochs=2, hidden=32, seed=3)
    a, b = train_drocc(_blob(), cfg), train_drocc(_blob(), cfg)
    x = _blob(seed=1, n=50)
    assert np.array_equal(a.anomaly_scores(x), b.anomaly_scores(x)) and a.model_id == b.model_id
    c = train_drocc(_blob(), dataclasses.replace(cfg, seed=4))
    assert c.model_id != a.model_id


def test_a_rows_score_does_not_depend_on_the_other_rows_of_its_batch():
    """Faces are scored in whatever batches the run's files make: each score must be the same bit
    for bit however the rows are grouped, ordered or split (it was not: 2 of 375 real faces moved
    by one float32 ulp between two runs whose files were grouped differently)."""
    m = train_drocc(_blob(), DROCCConfig(epochs=4, only_ce_epochs=2, hidden=32))
    x = _blob(seed=5, n=1037)
    whole = m.anomaly_scores(x)
    perm = np.random.default_rng(0).permutation(len(x))
    assert np.array_equal(m.anomaly_scores(x[perm]), whole[perm])
    for batch in (1, 7, 64, 1000):
        assert np.array_equal(m.anomaly_scores(x, batch_size=batch), whole), batch
    assert all(np.array_equal(m.anomaly_scores(x[i : i + 1]), whole[i : i + 1]) for i in range(0, len(x), 97))


def test_far_points_score_higher_and_the_artifact_round_trips(tmp_path):
    m = train_drocc(_blob(), DROCCConfig(epochs=15, only_ce_epochs=3, hidden=64))
    normal, far = _blob(seed=2, n=200), _blob(seed=3, n=200) + np.array([0, 0, 0, 3, 3, 3], np.float32)
    s_n, s_f = m.anomaly_scores(normal), m.anomaly_scores(far)
    assert (s_f[:, None] > s_n[None, :]).mean() > 0.95  # AUC of "far" above "normal"
    m.threshold, m.threshold_policy = 0.5, "test"
    again = DROCCModel.from_bytes(m.to_bytes())
    assert np.array_equal(again.anomaly_scores(far), s_f) and again.threshold == 0.5 and again.model_id == m.model_id


def test_a_model_that_ranks_backwards_is_caught_without_labels():
    """Trained on "normal" alone (only CE epochs) a model calls far-off points the most normal of
    all; the far-probe check sees that from the training data alone, and a trained model passes."""
    x = _blob()
    far = _blob(seed=3, n=200) + np.array([0, 0, 0, 3, 3, 3], np.float32)
    ce_only = train_drocc(x, DROCCConfig(epochs=3, only_ce_epochs=3, hidden=64))
    assert (
        ce_only.anomaly_scores(far)[:, None] > ce_only.anomaly_scores(_blob(seed=2, n=200))[None, :]
    ).mean() < 0.5  # really backwards
    assert ce_only.inverted and ce_only.far_probe_auc < 0.2
    trained = train_drocc(x, DROCCConfig(epochs=15, only_ce_epochs=3, hidden=64))
    assert not trained.inverted and trained.far_probe_auc > 0.9
    assert DROCCModel.from_bytes(ce_only.to_bytes()).inverted  # kept in the artifact


def test_a_non_model_file_is_one_clear_error():
    with pytest.raises(ValueError, match="is not a facepipe DROCC model"):
        DROCCModel.from_bytes(b"not a model", "x.pt")
