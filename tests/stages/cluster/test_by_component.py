"""Propagation one connected component at a time (facepipe.stages.cluster.by_component): the
labels of the whole graph, bit for bit, whatever the batches -- fresh and warm-started, weighted
or not -- and on real Ray tasks, a task whose worker dies run again; a giant component in
synchronous rounds over parts (in this process and as Ray actors, one killed mid-rounds)."""

import os
import signal

import numpy as np
import pytest

from bench.accuracy import cluster_methods
from facepipe.stages.cluster.by_component import (
    component_batches,
    components_csr,
    on_ray,
    pass_groups,
    propagate_by_component,
)
from facepipe.stages.cluster.graph import knn
from facepipe.stages.cluster.methods import (
    components,
    movable_nodes,
    propagate_labels,
    symmetric_graph,
    threshold_edges,
)


def local(fn, work):  # the executor in this process: the same calls Ray would make
    return [fn(*args) for args in work]


@pytest.fixture(scope="module")
def graph():
    """A kNN graph of 3,000 synthetic identities (look-alikes among them): thousands of
    components, large and small, some chained."""
    x, _ = cluster_methods.synthetic(3000, seed=4)
    idx, dist = knn(x, 10)
    return len(x), symmetric_graph(len(x), *threshold_edges(idx, dist, 0.55))


def test_the_groups_of_each_pass_are_the_whole_graphs_permutation():
    """rng.permutation of the movable nodes shuffles them as it shuffles their positions: the
    group each node falls in is the one propagate_labels' order gives it."""
    movable = np.sort(np.random.default_rng(1).choice(10_000, 3_000, replace=False))
    groups = pass_groups(len(movable), 3, seed=7, chunks=64)
    rng, size = np.random.default_rng(7), -(-len(movable) // 64)
    for t in range(3):
        order = rng.permutation(movable)
        want = np.empty(len(movable), np.int64)
        want[np.searchsorted(movable, order)] = np.arange(len(order)) // size
        assert np.array_equal(groups[t], want)


def test_components_in_chunks_are_the_union_find_of_every_edge(graph):
    n, (indptr, indices, _) = graph
    a = np.repeat(np.arange(n), np.diff(indptr))
    assert np.array_equal(components_csr(indptr, indices), components(n, a, indices))


def test_batches_are_whole_components_balanced_by_edges(graph):
    n, (indptr, indices, _) = graph
    movable = movable_nodes(indptr, None)
    root = components_csr(indptr, indices)
    batches, giants = component_batches(indptr, indices, movable, 4)
    assert giants == []  # none asked for
    assert len(batches) == 4
    seen = np.concatenate(batches)
    assert len(seen) == len(np.unique(seen)) and set(movable) <= set(seen)
    for b in batches:
        assert np.all(np.diff(b) > 0)
        assert np.isin(root, root[b]).sum() == len(b)  # every node of its components
    edges = [np.diff(indptr)[b].sum() for b in batches]
    assert max(edges) < 1.5 * np.mean(edges)


@pytest.mark.parametrize("tasks", [2, 5, 64])
@pytest.mark.parametrize("warm", [False, True])
def test_the_labels_are_the_whole_graphs(graph, tasks, warm):
    """Fresh (each node its own label) and warm (a third of the nodes frozen with known
    identities, the rest starting from them): the same labels as one propagation of the graph."""
    n, g = graph
    rng = np.random.default_rng(tasks)
    labels, frozen = np.arange(n), None
    if warm:
        labels = rng.integers(0, n // 5, n)
        frozen = rng.random(n) < 0.3
    want = propagate_labels(*g, labels, frozen, seed=3)
    got = propagate_by_component(*g, labels, frozen, seed=3, tasks=tasks, mapper=local)
    assert np.array_equal(got, want)
    assert len(np.unique(want)) < n // 2  # it did propagate


def test_weighted_edges_too(graph):
    n, (indptr, indices, _) = graph
    w = np.random.default_rng(0).random(len(indices))
    want = propagate_labels(indptr, indices, w, np.arange(n), seed=1)
    assert np.array_equal(propagate_by_component(indptr, indices, w, np.arange(n), seed=1, tasks=3, mapper=local), want)


def test_on_ray_tasks(graph, ray_cluster):
    """The default executor: Ray tasks of a local cluster, the same labels."""
    n, g = graph
    want = propagate_labels(*g, np.arange(n), seed=0)
    assert np.array_equal(propagate_by_component(*g, np.arange(n), seed=0, tasks=3), want)


def test_a_task_whose_worker_dies_is_run_again_and_the_labels_are_the_same(graph, ray_cluster, tmp_path):
    """A propagation task's worker killed mid-night: Ray runs the task again on a new worker, and
    the labels are the whole graph's, as if nothing had happened."""
    n, g = graph
    want = propagate_labels(*g, np.arange(n), seed=0)
    marker = str(tmp_path / "killed")

    def mapper(fn, work):
        def dies_once(*args):  # in the Ray worker: the first call kills its process (SIGKILL, as the OOM killer)
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return fn(*args)
            os.kill(os.getpid(), signal.SIGKILL)

        return on_ray(dies_once, work)  # nested: Ray ships it by value (the test module is not on the workers)

    got = propagate_by_component(*g, np.arange(n), seed=0, tasks=3, mapper=mapper)
    assert os.path.exists(marker), "no worker was killed"
    assert np.array_equal(got, want)


def test_two_nights_on_tasks_give_the_drivers_identities(ray_cluster, tmp_path):
    """A first night in full and an incremental one (the region's graph warm-started, its
    neighbours frozen) with the propagation on 2 Ray tasks: the identities and events of the
    same nights propagated on the driver."""
    import pyarrow.parquet as pq

    from facepipe.stages.cluster.graph import IndexConfig
    from facepipe.stages.cluster.stage import ClusterConfig, run_cluster
    from testbed.cluster_faces import face_ids, write_faces

    x, _ = cluster_methods.synthetic(400, seed=5)
    ids = face_ids(len(x))
    perm = np.random.default_rng(2).permutation(len(x))
    first, second = perm[: len(x) * 9 // 10], perm[len(x) * 9 // 10 :]
    got = {}
    for tasks in (1, 2):
        out = tmp_path / f"tasks{tasks}"
        cfg = ClusterConfig(threshold=0.5, propagation_tasks=tasks, index=IndexConfig(exact_max=500, nlist=32))
        write_faces(out, "2026-11-01", [ids[i] for i in first], x[first])
        s1 = run_cluster(str(out), "2026-11-01", "night1", cfg)
        write_faces(out, "2026-11-02", [ids[i] for i in second], x[second])
        s2 = run_cluster(str(out), "2026-11-02", "night2", cfg)
        assert s2["mode"] == "incremental" and s2["region"] > len(second)
        t = pq.read_table(out / "face_identity").to_pydict()
        got[tasks] = (dict(zip(t["face_id"], t["identity_id"])), s1["identities"], s2["merges"], s2["splits"])
    assert got[2] == got[1]
    assert got[1][1] > 300


def test_how_many_tasks(ray_cluster):
    """1 on the driver; 0: the cluster's CPUs for a graph of propagation_min nodes or more on a
    multi-node cluster (on one node the driver: tasks measured slower there); T: T."""
    from facepipe.stages.cluster.by_component import task_count

    assert task_count(10**7, 1, 10**6) == 1
    assert task_count(10**5, 0, 10**6) == 1
    assert task_count(10**6, 0, 10**6) == 1  # the session's cluster: one node
    assert task_count(10, 3, 10**6) == 3


@pytest.fixture(scope="module")
def giant(graph):
    """The synthetic graph with a chain through half of its nodes: one component of ~half the
    graph, beside thousands of small ones."""
    n, (indptr, indices, _) = graph
    a = np.repeat(np.arange(n), np.diff(indptr))
    chain = np.arange(0, n // 2, 1)
    src, dst = np.r_[a, chain[:-1]], np.r_[indices, chain[1:]]
    return n, symmetric_graph(n, src, dst)


def test_a_giant_component_is_cut_apart_and_propagated_in_rounds(giant):
    """The component larger than a batch's share is returned apart (and no batch holds it); in
    rounds over 3 parts the labels are the whole graph's -- fresh, warm-started with frozen
    nodes, weighted."""
    from facepipe.stages.cluster.rounds import Parts

    n, g = giant
    movable = movable_nodes(g[0], None)
    batches, giants = component_batches(g[0], g[1], movable, 4, least=1000)
    assert len(giants) == 1 and len(giants[0]) > n // 2
    assert not np.isin(np.concatenate(batches), giants[0]).any()
    rng = np.random.default_rng(3)
    frozen = rng.random(n) < 0.3
    weights = rng.random(len(g[1])).astype(np.float32)
    for labels, fz, w in (
        (np.arange(n), None, None),
        (rng.integers(0, 400, n), frozen, None),
        (np.arange(n), None, weights),
    ):
        want = propagate_labels(g[0], g[1], w, labels, fz, seed=5)
        got = propagate_by_component(g[0], g[1], w, labels, fz, seed=5, tasks=3, mapper=local, giant=1000, parts=Parts)
        assert np.array_equal(got, want)


def test_a_giant_component_on_ray_actors_one_killed_mid_rounds(giant, ray_cluster):
    """The rounds' parts as Ray actors, one of them killed (SIGKILL) after a few rounds: Ray
    restarts it, the driver hands it the labels the rounds had reached and runs its round again,
    and the labels are the whole graph's."""
    import ray

    from facepipe.stages.cluster.rounds import RayParts

    killed = []

    class KillingParts(RayParts):
        def step(self, t, g, nodes, new, label):
            if (t, g) == (0, 9):
                pid = ray.get(self.actors[0].pid.remote())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            return super().step(t, g, nodes, new, label)

        def close(self):
            killed.append(ray.get(self.actors[0].pid.remote()))  # the restarted process
            super().close()

    n, g = giant
    want = propagate_labels(*g, np.arange(n), seed=0)
    got = propagate_by_component(*g, np.arange(n), seed=0, tasks=2, mapper=local, giant=1000, parts=KillingParts)
    assert len(killed) == 2 and killed[0] != killed[1], "no part was killed and restarted"
    assert np.array_equal(got, want)
