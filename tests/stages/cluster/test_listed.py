"""Neighbour lists kept from night to night (facepipe.stages.cluster.listed): an old face's kept
list, with the night's new faces put into it from their own searches, is the list a fresh search
over every face gives -- so an incremental night need not search the identities it touches again."""

import numpy as np

from facepipe.stages.cluster.graph import ExactIndex
from facepipe.stages.cluster.listed import ListedIndex, Lists
from testbed.cluster_faces import people


def _points(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 10, 16)).astype(np.float32)
    return (centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.3, (n, 16))).astype(np.float32)


def _kept(x_old, k, index=ExactIndex):
    """Lists of the old faces as a search over the old faces alone gave them."""
    lists = Lists.empty(len(x_old), k)
    idx, dist = index(x_old).search(np.arange(len(x_old)), k)
    lists.record(np.arange(len(x_old)), idx, dist)
    return lists


def _grown(lists, n):
    """The old faces' lists over n rows (the new faces' rows unknown)."""
    grown = Lists.empty(n, lists.k)
    m = len(lists.nbr)
    grown.nbr[:m], grown.dist[:m], grown.valid[:m] = lists.nbr, lists.dist, lists.valid
    return grown


def test_kept_lists_with_the_new_faces_put_in_equal_a_fresh_search_of_all():
    x, k, old = _points(1200), 10, 1000
    lists = _grown(_kept(x[:old], k), len(x))
    # reach: all faces, so every new face finds every old one it is among the k nearest of
    listed = ListedIndex(ExactIndex(x), lists, np.arange(old, len(x)), reach=len(x) - 1)
    got_i, got_d = listed.search(np.arange(len(x)), k)
    want_i, want_d = ExactIndex(x).search(np.arange(len(x)), k)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-5)
    assert (got_i == want_i).mean() > 0.999  # ties in float distance may swap two neighbours
    assert listed.inserted > 0 and lists.changed[old:].all()
    assert lists.valid.all(), "the new faces' answers are kept as lists too"


class _Within(ExactIndex):
    """Exact search for the neighbours under a radius only (as the stage's ivf index gives them)."""

    radius = 0.55

    def search(self, rows, k):
        idx, dist = super().search(rows, k)
        far = dist >= self.radius
        return np.where(far, -1, idx), np.where(far, np.inf, dist)


def test_at_the_nights_reach_the_kept_lists_under_the_radius_equal_a_fresh_search():
    """The stage's defaults (k = 20, reach = 50, neighbours under the radius) on faces of people
    of 30 photos: every new face finds every old face whose list it belongs in."""
    x, _ = people(200, 30, seed=1)
    order = np.random.default_rng(0).permutation(len(x))
    x, k, old = x[order], 20, int(0.9 * len(x))
    lists = _grown(_kept(x[:old], k, _Within), len(x))
    got_i, got_d = ListedIndex(_Within(x), lists, np.arange(old, len(x)), reach=50).search(np.arange(old), k)
    want_i, want_d = _Within(x).search(np.arange(old), k)
    assert np.isfinite(want_d).sum() > 0.9 * old * k, "the lists are full: new faces must push old ones out"
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-5)
    assert (got_i == want_i).mean() > 0.999


def test_a_face_goes_into_a_list_only_where_it_is_nearer_than_the_farthest():
    lists = Lists.empty(4, 2)
    lists.record(np.array([0, 1]), np.array([[2, 3], [2, -1]]), np.array([[0.1, 0.3], [0.2, np.inf]], np.float32))
    lists.changed[:] = False
    # face 3 found face 0 at 0.4 (0's list is full, its farthest 0.3) and face 1 at 0.25 (room)
    assert lists.insert(np.array([3]), np.array([[0, 1]]), np.array([[0.4, 0.25]], np.float32)) == 1
    assert lists.nbr[0].tolist() == [2, 3] and lists.nbr[1].tolist() == [2, 3]
    assert lists.changed.tolist() == [False, True, False, False]
    # face 3 found again (a publish lost, searched once more): held once
    lists.insert(np.array([3]), np.array([[1]]), np.array([[0.25]], np.float32))
    assert lists.nbr[1].tolist() == [2, 3]
    # nearer than both: first, the farthest pushed out
    lists.insert(np.array([3]), np.array([[0]]), np.array([[0.05]], np.float32))
    assert lists.nbr[0].tolist() == [3, 2] and np.allclose(lists.dist[0], [0.05, 0.1])


def test_a_face_without_a_valid_list_is_searched_and_its_answer_kept():
    x = _points(200)
    lists = _kept(x, 5)
    lists.valid[7] = False  # e.g. a neighbour of it left the archive
    lists.changed[:] = False
    listed = ListedIndex(ExactIndex(x), lists, [], reach=10)
    i, d = listed.search(np.array([7, 8]), 5)
    want_i, want_d = ExactIndex(x).search(np.array([7, 8]), 5)
    assert (i == want_i).all() and lists.valid[7] and lists.changed.tolist().count(True) == 1
    deeper, _ = listed.search(np.array([8]), 8)  # deeper than the lists: searched
    assert (deeper == ExactIndex(x).search(np.array([8]), 8)[0]).all()


def _insert_by_hand(lists, src, idx, dist):
    """What :meth:`Lists.insert` must give, list by list: the held entries and the faces that
    found it nearer than its farthest, each face once at its least distance, by (distance, face)."""
    nbr, dd = lists.nbr.copy(), lists.dist.copy()
    came = {}
    for f, row_i, row_d in zip(src, idx, dist):
        for o, d in zip(row_i, row_d):
            if o >= 0 and np.isfinite(d) and lists.valid[o] and d < lists.dist[o, -1] and o not in set(src):
                came.setdefault(int(o), []).append((float(d), int(f)))
    for o, new in came.items():
        best = {}
        for d, f in [(float(d), int(f)) for f, d in zip(lists.nbr[o], lists.dist[o]) if f >= 0] + new:
            best[f] = min(best.get(f, np.inf), d)
        top = sorted((d, f) for f, d in best.items())[: lists.k]
        nbr[o], dd[o] = -1, np.inf
        nbr[o, : len(top)] = [f for _, f in top]
        dd[o, : len(top)] = [d for d, _ in top]
    return nbr, dd


def test_an_insert_gives_each_list_its_nearest_by_distance_then_face_however_many_come_in():
    """One face into a list goes in place, several (or one it already holds, or a list with a tie)
    by a merge: either way the list a merge by hand gives -- ties by face, a face held once."""
    rng = np.random.default_rng(4)
    n, k = 400, 6
    lists = Lists.empty(n, k)
    old = np.arange(300)
    idx = np.stack([rng.choice(n, k, replace=False) for _ in old])
    d = np.sort(rng.integers(1, 40, (len(old), k)) / 40, axis=1).astype(np.float32)  # coarse: ties
    short = np.arange(k)[None] >= rng.integers(k // 2, k + 1, (len(old), 1))  # some lists not full
    lists.record(old, np.where(short, -1, idx), np.where(short, np.inf, d))
    lists.changed[:] = False
    src = np.arange(300, 400)
    found = rng.integers(0, 300, (len(src), 8))
    found[:10, 0] = lists.nbr[found[:10, 0], 0]  # some found again: a face they hold already
    fd = (rng.integers(1, 40, found.shape) / 40).astype(np.float32)
    want = _insert_by_hand(lists, src, found, fd)
    changed = lists.insert(src, found, fd)
    assert (lists.nbr == want[0]).all() and (lists.dist == want[1]).all()
    assert changed == lists.changed.sum() > 50
