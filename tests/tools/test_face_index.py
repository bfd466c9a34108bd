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
