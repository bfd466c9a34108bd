"""The order every clustering runs in: it depends on the embeddings only; and faces of one image
parted, the faces that leave an identity grouped again as the people they are."""

import numpy as np

from facepipe.stages.cluster.constraints import canonical_order


def test_the_canonical_order_is_the_lexicographic_order_of_the_rows():
    """The fast path (sort by the first column, then only the rows tied there by the next) gives exactly
    np.lexsort's order -- ties in the first column, copies of a face, and all-equal rows included --
    so identities are unchanged by it."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        x = rng.integers(0, 3, (rng.integers(1, 60), rng.integers(1, 5))).astype(np.float32)
        if rng.random() < 0.3:
            x[:, 0] = 0
        np.testing.assert_array_equal(canonical_order(x), np.lexsort(x.T[::-1]))
    x = rng.normal(size=(5000, 128)).astype(np.float32)
    x[4000:4500] = x[:500]  # copies
    np.testing.assert_array_equal(canonical_order(x), np.lexsort(x.T[::-1]))
    assert len(canonical_order(np.zeros((0, 128), np.float32))) == 0


def test_faces_of_one_image_in_one_identity_are_parted_as_before():
    """split_same_image finds the (identity, image) pairs held twice with numpy and loops over
    those only; what it does with them is unchanged: the face nearest the identity's mean (or the
    one that may not move) stays, the others become identities of their own, numbered in order --
    the pairs by identity, then by their first face (the clustering's order: not by image id, a
    hash of the image's path). Image ids as strings or as the stage's numbers: the same."""
    from facepipe.stages.cluster.constraints import split_same_image

    def reference(labels, x, image_ids, movable):  # the loop over every face it replaced
        out, nxt, key = labels.copy(), int(labels.max(initial=-1)) + 1, {}
        for i in np.flatnonzero(out >= 0):
            key.setdefault((int(out[i]), image_ids[i]), []).append(i)
        for (lab, _), members in sorted(key.items(), key=lambda kv: (kv[0][0], kv[1][0])):
            if len(members) < 2:
                continue
            centre = x[out == lab].mean(0)
            keep = min(members, key=lambda i: (bool(movable[i]), float(np.linalg.norm(x[i] - centre)), i))
            for i in members:
                if i != keep and movable[i]:
                    out[i], nxt = nxt, nxt + 1
        return out

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 80))
        labels = rng.integers(-1, 6, n)
        x = rng.normal(size=(n, 4)).astype(np.float32)
        ids = np.array([f"im{v}" for v in rng.integers(0, 10, n)], object)
        movable = rng.random(n) < 0.7
        want = reference(labels, x, ids, movable)
        np.testing.assert_array_equal(split_same_image(labels, x, ids, movable), want)
        numbers = np.unique(ids, return_inverse=True)[1].astype(np.int64) * 7 % 11  # any numbering
        np.testing.assert_array_equal(split_same_image(labels, x, numbers, movable), want)


def _group_photos(people: list[float], photos: int, alone: int, seed: int = 0):
    """Faces of len(people) people (centres ``people`` apart along one axis, 0.05 of noise): each
    person in ``photos`` group photos with all the others, and in ``alone`` photos of their own;
    every face labelled one identity, as a clustering that joined them would leave it."""
    rng = np.random.default_rng(seed)
    x, person, images = [], [], []
    for p, at in enumerate(people):
        for k in range(photos + alone):
            x.append(np.r_[at, 0.0, 0.0, 0.0] + rng.normal(size=4) * 0.05 / 2)
            person.append(p)
            images.append(f"group{k}" if k < photos else f"p{p}-alone{k}")
    return np.array(x, np.float32), np.array(person), np.array(images, object)


def test_the_faces_one_identity_gave_up_are_grouped_again_as_the_people_they_are():
    """Two people joined in one identity who share four group photos: the cannot-link keeps one face
    of each photo, and the faces that leave (a person's) stay together as one identity -- not four
    single faces -- while faces of different people (1.0 apart) or of one image are never joined."""
    from facepipe.stages.cluster.constraints import split_same_image

    x, person, images = _group_photos([0.0, 1.0], photos=4, alone=4)
    labels, movable = np.zeros(len(x), np.int64), np.ones(len(x), bool)
    before = split_same_image(labels, x, images, movable)  # no regroup: each face that left alone
    left = np.flatnonzero(before != 0)
    assert len(left) == 4 and len(set(before[left].tolist())) == 4
    after = split_same_image(labels, x, images, movable, regroup=0.45)
    np.testing.assert_array_equal(after == 0, before == 0)  # the same faces left
    for p in (0, 1):  # each person's faces that left: one identity, of that person only
        gone = left[person[left] == p]
        assert len(set(after[gone].tolist())) <= 1
        assert not set(after[gone].tolist()) & set(after[left[person[left] != p]].tolist())
    for lab in set(after.tolist()):
        assert len(set(images[after == lab])) == (after == lab).sum()  # never two faces of one image


def test_faces_grouped_again_are_parted_again_where_they_hold_two_of_one_image():
    """Four people in the same five group photos, two pairs of look-alikes 0.3 apart: the faces
    that leave are chained across the look-alikes into a group holding two faces of each photo,
    which is parted again -- until each person's faces that left are one identity of their own."""
    from facepipe.stages.cluster.constraints import split_same_image

    x, person, images = _group_photos([0.0, 0.3, 1.0, 1.3], photos=5, alone=2, seed=1)
    out = split_same_image(np.zeros(len(x), np.int64), x, images, np.ones(len(x), bool), regroup=0.45)
    for lab in set(out.tolist()):
        assert len(set(images[out == lab])) == (out == lab).sum()
    left = out != 0
    assert sorted(len(set(out[left & (person == p)].tolist())) for p in range(4)) == [0, 1, 1, 1]
    assert len(set(out[left].tolist())) == 3  # one identity per person, no two people joined
