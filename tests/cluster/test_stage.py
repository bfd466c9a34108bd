"""Identity ids: deterministic, and reused by greatest overlap when faces are re-clustered."""

import numpy as np

from facepipe.cluster.stage import assign_ids, new_identity_id


def test_new_ids_are_deterministic_and_reuse_follows_overlap():
    faces = ["f1", "f2", "f3", "f4", "f5"]
    labels = np.array([0, 0, 1, 1, -1])
    first = assign_ids(faces, labels, {})
    assert first == [new_identity_id(["f1", "f2"])] * 2 + [new_identity_id(["f3", "f4"])] * 2 + [None]
    assert assign_ids(faces, labels, {}) == first
    # next night: f2 moved to the other cluster and f6 arrived; both ids survive by overlap
    prev = dict(zip(faces, first))
    again = assign_ids(["f1", "f2", "f3", "f4", "f6"], np.array([0, 1, 1, 1, 0]), prev)
    assert again == [first[0], first[2], first[2], first[2], first[0]]


def test_an_old_id_goes_to_one_cluster_only():
    prev = {"a": "id-old", "b": "id-old", "c": "id-old"}
    ids = assign_ids(["a", "b", "c"], np.array([0, 0, 1]), prev)  # a split
    assert ids[0] == ids[1] == "id-old" and ids[2] not in (None, "id-old")
