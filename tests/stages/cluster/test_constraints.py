"""The order every clustering runs in: it depends on the embeddings only."""

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
