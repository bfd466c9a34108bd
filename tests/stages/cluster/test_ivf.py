"""The inverted-file index the cluster stage searches beyond 20,000 faces (facepipe.stages.cluster.ivf)."""

import numpy as np

from bench.accuracy import cluster_methods
from facepipe.stages.cluster.graph import IndexConfig
from facepipe.stages.cluster.ivf import IVFIndex


def test_a_search_within_a_radius_finds_the_same_neighbours_under_it():
    """With a radius the scan keeps only the faces under it (a comparison per cell instead of a
    top-k): every neighbour under the radius that the k-nearest scan finds, at the same distance,
    nothing beyond it, and -1 / inf after the last."""
    x, _ = cluster_methods.synthetic(1500)
    index = IVFIndex(x, IndexConfig(nlist=64, nprobe=8))
    rows = np.arange(0, len(x), 3)
    ki, kd = index.search(rows, 20)
    index.radius = 0.5
    ri, rd = index.search(rows, 20)
    assert (rd[np.isfinite(rd)] < 0.5).all() and (ri[~np.isfinite(rd)] == -1).all()
    for a, da, b, db in zip(ki, kd, ri, rd):
        under = da < 0.5
        assert set(a[under]) == set(b[db < 0.5]), (a, b)
        np.testing.assert_allclose(np.sort(da[under]), db[db < 0.5], atol=1e-5)
    assert (ri != rows[:, None]).all()  # the face itself left out


def test_a_crowd_under_the_radius_keeps_each_querys_nearest_only():
    """Copies of one face fill cells with faces under the radius: each query keeps its k nearest
    (memory stays that of the k-nearest scan), the same ones the k-nearest scan finds."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(50, 128)), np.repeat(rng.normal(size=(1, 128)), 400, 0)]) * 0.05
    x = (x + rng.normal(size=x.shape) * 1e-4).astype(np.float32)
    index = IVFIndex(x, IndexConfig(nlist=8, nprobe=4))
    ki, kd = index.search(np.arange(len(x)), 10)
    index.radius = 0.5
    ri, rd = index.search(np.arange(len(x)), 10)
    assert (ri[50:] >= 0).all()  # the copies: 10 neighbours each, the nearest
    np.testing.assert_allclose(rd[50:], kd[50:], atol=1e-5)
    assert (ri[:50] == -1).all()  # the others are farther apart than the radius
