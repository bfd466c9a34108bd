"""kNN graph and clustering methods: exact neighbours against brute force, the chaining case,
determinism."""

import numpy as np
import pytest

from bench.accuracy import cluster_methods
from facepipe.stages.cluster.graph import knn
from facepipe.stages.cluster.methods import chinese_whispers, mutual_density, threshold_components
from facepipe.stages.cluster.metrics import evaluate_clusters


def test_blocked_knn_equals_brute_force():
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    idx, dist = knn(x, 5, block=64)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    ref = np.argsort(d, axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(dist, np.take_along_axis(d, ref, 1), atol=1e-4)
    assert (idx == ref).mean() > 0.99  # ties aside
    assert knn(x[:1], 5)[0].shape == (1, 0)


@pytest.mark.parametrize("method", ["chinese_whispers", "mutual_density"])
def test_a_thin_bridge_does_not_chain_two_people(method):
    """Two tight groups joined by faces 0.4 apart (each link under the 0.5 threshold): connected
    components merge them, the guarded methods keep them apart."""
    x = cluster_methods.chain()
    idx, dist = knn(x, 10)
    assert threshold_components(idx, dist, 0.5)[0] == threshold_components(idx, dist, 0.5)[25]  # the naive way chains
    lab = chinese_whispers(idx, dist, 0.5) if method == "chinese_whispers" else mutual_density(idx, dist, 0.5, 3, 5)
    assert len(set(lab[:25])) == 1 and len(set(lab[25:50])) == 1 and lab[0] != lab[25] and lab[0] >= 0 and lab[25] >= 0


def test_identities_are_recovered_without_merges_and_labels_are_deterministic():
    """200 synthetic identities (look-alikes included) at the 0.55 threshold: no two people
    merged, BCubed F 0.994 measured; the same seed gives the same labels."""
    x, y = cluster_methods.synthetic(200, seed=1)
    idx, dist = knn(x, 10)
    a, b = chinese_whispers(idx, dist, 0.55, seed=3), chinese_whispers(idx, dist, 0.55, seed=3)
    assert np.array_equal(a, b)
    r = evaluate_clusters(a.tolist(), y.tolist())
    assert r.merged_label_errors == 0 and r.bcubed_precision == 1.0 and r.bcubed_f > 0.99, str(r)


def test_min_faces_leaves_small_groups_unassigned():
    x, y = cluster_methods.synthetic(100, seed=2)
    idx, dist = knn(x, 10)
    lab = threshold_components(idx, dist, 0.5, min_faces=3)
    sizes = np.bincount(y)
    assert (lab[np.isin(y, np.flatnonzero(sizes < 3))] == -1).all()


def test_vectorised_components_equal_a_breadth_first_search():
    """components() (hook + pointer jumping) against a plain BFS on random sparse graphs."""
    from collections import deque

    from facepipe.stages.cluster.methods import components

    rng = np.random.default_rng(7)
    for n, m in [(1, 0), (50, 20), (500, 400), (2000, 2500)]:
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        adj = [[] for _ in range(n)]
        for u, v in zip(a, b):
            adj[u].append(v)
            adj[v].append(u)
        ref = np.full(n, -1)
        for s in range(n):
            if ref[s] < 0:
                ref[s], todo = s, deque([s])
                while todo:
                    for v in adj[todo.popleft()]:
                        if ref[v] < 0:
                            ref[v] = s
                            todo.append(v)
        assert np.array_equal(components(n, a, b), ref)


def test_frozen_nodes_lend_their_label_and_keep_it():
    """Warm start: a frozen node's label spreads to its free neighbours but never changes."""
    from facepipe.stages.cluster.methods import propagate_labels, symmetric_graph

    # path 0-1-2-3 (each edge found from both ends: still one edge), ends frozen with labels 0 and
    # 9, the middle free: ties go to the smaller label, so 0 spreads and 9 stays
    graph = symmetric_graph(4, np.array([0, 1, 2, 1]), np.array([1, 2, 3, 0]))
    lab = propagate_labels(*graph, np.array([0, 5, 6, 9]), frozen=np.array([True, False, False, True]))
    assert lab.tolist() == [0, 0, 0, 9]


def test_the_symmetric_graph_holds_each_pair_once_in_a_fixed_order():
    """CSR rows: a node's neighbours above it, then below it, each ascending; each unordered pair
    once with the weight it was first found with; no self-loops. (Label propagation visits
    neighbours in this order: a faster construction must give the same arrays.)"""
    from facepipe.stages.cluster.methods import symmetric_graph

    rng = np.random.default_rng(0)
    n, e = 300, 3000
    src, dst, w = rng.integers(0, n, e), rng.integers(0, n, e), rng.random(e)
    indptr, cols, ww = symmetric_graph(n, src, dst, w)
    first = {}
    for s, d, x in zip(src, dst, w):
        if s != d:
            first.setdefault((min(s, d), max(s, d)), x)
    for v in range(n):
        above = sorted(b for a, b in first if a == v)
        below = sorted(a for a, b in first if b == v)
        assert cols[indptr[v] : indptr[v + 1]].tolist() == above + below
        want = [first[(v, b)] for b in above] + [first[(a, v)] for a in below]
        assert ww[indptr[v] : indptr[v + 1]].tolist() == want
    plain = symmetric_graph(n, src, dst)
    assert plain[2] is None and np.array_equal(plain[0], indptr) and np.array_equal(plain[1], cols)


def test_an_unweighted_graph_propagates_as_one_of_unit_weights():
    """Chinese Whispers on a graph without a weights array (every edge weighs 1: no 16 bytes an
    edge at 10^7 faces) gives the labels it gives with explicit weights of 1."""
    from facepipe.stages.cluster.methods import propagate_labels, symmetric_graph

    rng = np.random.default_rng(1)
    n, e = 2000, 6000
    indptr, cols, none = symmetric_graph(n, rng.integers(0, n, e), rng.integers(0, n, e))
    assert none is None and cols.dtype == np.int32
    start, frozen = rng.integers(0, 50, n), rng.random(n) < 0.2
    ones = np.ones(len(cols))
    for seed in range(3):
        want = propagate_labels(indptr, cols, ones, start, frozen, seed=seed)
        assert np.array_equal(propagate_labels(indptr, cols, None, start, frozen, seed=seed), want)
