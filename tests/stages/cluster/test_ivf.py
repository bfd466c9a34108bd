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


def test_the_index_holds_no_copy_of_the_embeddings():
    """The faces are scanned where they are (a cell's rows gathered when it is scanned), not
    copied cell by cell: what the index holds beside ``x`` is its probes (int32), order and norms
    -- at 10^7 faces a copy was 5 GB of the first night's peak. Same neighbours as an exact search
    of the probed cells (the k-nearest scan, checked against brute force on the cells' faces)."""
    import torch

    x, _ = cluster_methods.synthetic(1500)
    x = np.ascontiguousarray(x, np.float32)
    index = IVFIndex(x, IndexConfig(nlist=64, nprobe=8), device="cpu")
    owned = [*vars(index).values(), *vars(index.cells).values()]
    held = [v for v in owned if isinstance(v, torch.Tensor) and v.data_ptr() != index.x.data_ptr()]
    assert index.x.data_ptr() == torch.from_numpy(x).data_ptr()  # x itself, shared
    assert index.probes.dtype == torch.int32
    assert sum(t.nelement() * t.element_size() for t in held) < x.nbytes / 4
    rows = np.arange(0, len(x), 7)
    ids, d = index.search(rows, 5)
    probes = index.probes.numpy()
    for r, got, dist in zip(rows, ids, d):
        cand = np.flatnonzero(np.isin(probes[:, 0], probes[r]))
        cand = cand[cand != r]
        dd = np.linalg.norm(x[cand] - x[r], axis=1)
        want = cand[np.argsort(dd, kind="stable")[:5]]
        assert set(got) == set(want)
        np.testing.assert_allclose(dist, np.sort(dd)[:5], atol=1e-5)
