"""facepipe.stages.cluster.arrays: ``unique`` gives what ``np.unique`` gives (it only sorts
instead of hashing, numpy 2.4's slow path for plain integer arrays); ``Names`` (the archive's face
ids kept in Arrow) reads as the list of strings it replaces, and ``take`` / ``positions`` give
the same answers on it as on a list."""

import numpy as np
import pyarrow as pa

from facepipe.stages.cluster.arrays import Names, positions, take, unique


def test_unique_equals_numpys():
    rng = np.random.default_rng(0)
    for a in (
        rng.integers(-5, 50, 1000),
        rng.integers(0, 2**40, 5000),
        np.zeros(0, np.int64),
        np.array([[3, 1], [1, 2]]),
    ):
        assert np.array_equal(unique(a), np.unique(a)) and unique(a).dtype == np.unique(a).dtype


def test_names_read_as_the_list_they_replace():
    ids = [f"f{i:06d}" for i in range(200_000)]  # more than one CHUNK
    chunked = pa.chunked_array([pa.array(ids[:70_000]), pa.array(ids[70_000:])])
    names = Names(chunked)
    assert len(names) == len(ids) and names[0] == ids[0] and names[-1] == ids[-1] and names[12_345] == ids[12_345]
    assert names[5:9] == ids[5:9] and list(names) == ids and names == ids and names != ids[:-1]
    assert ids[7] in names and "nobody" not in names
    rows = np.array([199_999, 0, 70_000, 3, 3])
    assert take(names, rows) == take(ids, rows) == [ids[i] for i in rows]
    assert take(names, np.zeros(0, np.int64)) == []
    wanted = ["f000010", "nobody", "f199999", "f000010"]
    assert positions(names, wanted) == positions(ids, wanted) == {"f000010": 10, "f199999": 199_999}
