"""The identity tables' arithmetic (facepipe.stages.cluster.identities): an identity's centroid
is the float64 mean of its faces added in face-id order, bit for bit whichever way it is
computed (a faster sum must not move a published centroid), and the faces read back from the
output come sorted by face id whatever the files' order."""

import numpy as np

from facepipe.stages.cluster.identities import identity_stats, load_faces
from testbed.cluster_faces import face_ids, people, write_faces


def test_centroids_are_the_sequential_float64_means_bit_for_bit():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20_000, 128)).astype(np.float32)
    labels = rng.integers(-1, 3000, len(x))  # -1: unassigned, left out of every mean
    st = identity_stats(labels, x, rng.random(len(x)), rng.integers(0, 9, len(x)))
    for k in rng.choice(len(st.labels), 50, replace=False):
        total = np.zeros(128, np.float64)
        for row in np.flatnonzero(labels == st.labels[k]):  # in row order, one at a time
            total += x[row].astype(np.float64)
        assert np.array_equal(st.centroid[k], (total / st.counts[k]).astype(np.float32))
    none = identity_stats(np.full(3, -1), x[:3], np.zeros(3), np.zeros(3, int))
    assert none.centroid.shape == (0, 128)


def test_faces_are_read_sorted_by_face_id_with_their_own_embeddings(tmp_path):
    x, _ = people(50, 4, seed=2)
    fids = face_ids(len(x))
    perm = np.random.default_rng(0).permutation(len(x))
    half = len(x) // 2  # two files, each in a shuffled order
    write_faces(tmp_path, "2026-11-01", [fids[i] for i in perm[:half]], x[perm[:half]])
    write_faces(tmp_path, "2026-11-02", [fids[i] for i in perm[half:]], x[perm[half:]])
    fs = load_faces(str(tmp_path))
    assert fs.face_ids == sorted(fids)
    assert np.array_equal(fs.x, x[[fids.index(f) for f in fs.face_ids]])
