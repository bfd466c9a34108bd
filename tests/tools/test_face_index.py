"""The search index's backends (facepipe.tools.face_index): the inverted file used beyond
EXACT_MAX faces finds what exact search finds (recall@10 >= 0.99 on faces grouped like people)."""

import numpy as np

from facepipe.tools.face_index import _IVF, _Exact


def test_the_inverted_file_finds_the_exact_nearest_faces():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, 128)).astype(np.float32) * 0.1
    x = (centres[rng.integers(0, 2000, 40_000)] + rng.normal(0, 0.03, (40_000, 128))).astype(np.float32)
    q = (x[rng.choice(len(x), 200, replace=False)] + rng.normal(0, 0.01, (200, 128))).astype(np.float32)
    exact_i, exact_d = _Exact(x, "cpu").nearest(q, 10)
    ivf_i, ivf_d = _IVF(x).nearest(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_i, ivf_i)])
    assert recall >= 0.99, recall
    assert np.allclose(ivf_d[:, 0], exact_d[:, 0], atol=1e-4)  # distances, not squares
    assert (np.diff(exact_d, axis=1) >= 0).all() and (np.diff(ivf_d, axis=1) >= -1e-6).all()


def test_the_inverted_file_on_the_cluster_stages_kept_cells_finds_the_exact_nearest_faces():
    """Search opens on the cells the cluster stage kept in the output (no training); the faces
    those cells lack (here a tenth, as if added since the last clustering) are assigned at open."""
    from facepipe.stages.cluster.graph import IndexConfig
    from facepipe.stages.cluster.ivf import ivf_cells, train_cells
    from facepipe.storage.ivf_store import StoredCells, Trained

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, 128)).astype(np.float32) * 0.1
    x = (centres[rng.integers(0, 2000, 40_000)] + rng.normal(0, 0.03, (40_000, 128))).astype(np.float32)
    q = (x[rng.choice(len(x), 200, replace=False)] + rng.normal(0, 0.01, (200, 128))).astype(np.float32)
    cfg = IndexConfig()
    cent = train_cells(x, cfg)
    d2 = (x * x).sum(1)[:, None] - 2 * x @ cent.T + (cent * cent).sum(1)[None]
    probes = np.argsort(d2, axis=1)[:, :16].astype(np.int32)
    probes[::10] = -1  # not held yet
    slots = np.where(probes[:, 0] >= 0, np.arange(len(x)), -1)
    kept = StoredCells(cent, probes, Trained("e", ivf_cells(len(x), cfg), 16, 0, 10, 32, len(x), 1.0), slots, len(x))
    exact_i, _ = _Exact(x, "cpu").nearest(q, 10)
    ivf = _IVF(x, kept)
    assert ivf.index.nlist == len(cent) and ivf.index.ntotal == len(x)
    ivf_i, _ = ivf.nearest(q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_i, ivf_i)]) >= 0.99


def test_many_queries_at_once_get_the_answer_faiss_gives_one_at_a_time():
    """From BATCH query faces the inverted file is scanned cell by cell (facepipe.tools.batch_scan):
    the same cells probed, the same faces compared, so the same nearest faces and distances as
    FAISS's own query-by-query search."""
    from facepipe.tools.face_index import BATCH

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(1500, 128)).astype(np.float32) * 0.1
    x = (centres[rng.integers(0, 1500, 30_000)] + rng.normal(0, 0.03, (30_000, 128))).astype(np.float32)
    q = (x[rng.choice(len(x), 300, replace=False)] + rng.normal(0, 0.01, (300, 128))).astype(np.float32)
    ivf = _IVF(x)
    want_d2, want_i = ivf.index.search(q, 10)
    got_i, got_d = ivf.nearest(q, 10)
    assert len(q) >= BATCH and ivf.scan is not None
    assert (got_i == want_i).mean() > 0.999  # exact ties may come in another order
    np.testing.assert_allclose(got_d**2, want_d2, rtol=1e-4, atol=1e-4)
    few_i, _ = ivf.nearest(q[:5], 10)  # fewer than BATCH: FAISS's own search
    assert (few_i == want_i[:5]).all()
