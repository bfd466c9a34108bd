"""facepipe.stages.cluster.arrays: ``unique`` gives what ``np.unique`` gives (it only sorts
instead of hashing, numpy 2.4's slow path for plain integer arrays)."""

import numpy as np

from facepipe.stages.cluster.arrays import unique


def test_unique_equals_numpys():
    rng = np.random.default_rng(0)
    for a in (
        rng.integers(-5, 50, 1000),
        rng.integers(0, 2**40, 5000),
        np.zeros(0, np.int64),
        np.array([[3, 1], [1, 2]]),
    ):
        assert np.array_equal(unique(a), np.unique(a)) and unique(a).dtype == np.unique(a).dtype
