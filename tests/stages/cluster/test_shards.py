"""The neighbour search spread over Ray actors (facepipe.stages.cluster.shards), on the session's
real Ray cluster (2 CPUs: up to 2 shards). The multi-node cluster's test is in tests/test_multinode.py."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.accuracy import cluster_methods
from facepipe.stages.cluster.graph import IndexConfig
from facepipe.stages.cluster.ivf import IVFIndex
from facepipe.stages.cluster.shards import STAGED, ShardedIVF, cell_ranges, shard_count
from facepipe.stages.cluster.stage import ClusterConfig, run_cluster
from facepipe.storage.output import Output
from testbed.cluster_faces import face_ids, people, write_faces


def _index(n=400, nlist=64):
    x, _ = cluster_methods.synthetic(n)
    return IVFIndex(x, IndexConfig(nlist=nlist, nprobe=8, block=256), device="cpu")


@pytest.mark.parametrize("radius", [None, 0.5])
def test_sharded_search_answers_as_one_node(ray_cluster, tmp_path, radius):
    """Each shard scans its cells as one node would (the same faces, blocks and arithmetic) and
    the driver merges as one node does: the same neighbours in the same order, k-nearest or
    under a radius."""
    index = _index()
    index.radius = radius
    rows = np.arange(0, len(index.x), 2)
    want = index.search(rows, 20, chunk=1000)
    sharded = ShardedIVF(index, Output(str(tmp_path)), "night", 2)
    try:
        started = sharded.started
        assert len({i["pid"] for i in started}) == 2 and sum(i["faces"] for i in started) == len(index.x)
        got = index.search(rows, 20, chunk=1000, scan=sharded.scan)
    finally:
        sharded.close()
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
    assert not (tmp_path / "_staging" / "night" / STAGED).exists(), "the shard files outlived the night"


def test_a_killed_shard_is_restarted_from_its_file_and_the_answer_is_the_same(ray_cluster, tmp_path):
    """A shard's process killed while the night searches (SIGKILL, as the OOM killer does): Ray
    restarts it, it reloads its shard from its file in the output, the call runs again, and the
    answer is the one-node answer."""
    index = _index(1000)
    index.radius = 0.5
    rows = np.arange(len(index.x))
    want = index.search(rows, 20, chunk=500)
    sharded = ShardedIVF(index, Output(str(tmp_path)), "night", 2)
    victim = sharded.started[0]["pid"]
    calls, real = [], sharded.scan

    def scan(q, probes, k):  # the test's hook: count the chunks, so the kill lands mid-search
        calls.append(1)
        return real(q, probes, k)

    killer = threading.Thread(target=lambda: (_wait(lambda: len(calls) >= 3), os.kill(victim, signal.SIGKILL)))
    killer.start()
    try:
        got = index.search(rows, 20, chunk=500, scan=scan)
        killer.join()
        import ray

        pids = [i["pid"] for i in ray.get([a.info.remote() for a in sharded.actors])]
    finally:
        sharded.close()
    assert len(calls) == -(-len(rows) // 250), "the search was not the chunks it was meant to be"
    assert victim not in pids, "the shard was not killed mid-search and restarted"
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)


def _wait(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_cell_ranges_hold_about_as_many_faces_each():
    """Contiguous ranges covering every cell once, none empty of cells, balanced by faces."""
    counts = np.random.default_rng(0).integers(0, 100, 64)
    r = cell_ranges(counts, 4)
    assert r[0][0] == 0 and r[-1][1] == 64 and all(a < b for a, b in r)
    assert all(r[i][1] == r[i + 1][0] for i in range(3))
    faces = [counts[a:b].sum() for a, b in r]
    assert max(faces) - min(faces) <= 2 * counts.max()
    assert cell_ranges(np.array([0, 0, 5]), 3) == [(0, 1), (1, 2), (2, 3)]
    assert cell_ranges(np.array([7, 1]), 5) == [(0, 1), (1, 2)]
    assert cell_ranges(np.array([1, 1, 1, 10, 0]), 3) == [(0, 3), (3, 4), (4, 5)]  # a big cell: still 3 ranges


def test_shards_that_do_not_answer_fail_the_night_as_stalled_not_hang(ray_cluster, tmp_path, monkeypatch):
    """Every wait on the shards is bounded: a chunk not answered in time (here the bound is made
    tiny) is a ClusterStalled (exit 3), not a night that waits forever."""
    import facepipe.stages.cluster.shards as shards
    from facepipe.errors import ClusterStalled

    index = _index()
    index.radius = 0.5
    sharded = ShardedIVF(index, Output(str(tmp_path)), "night", 2)
    monkeypatch.setattr(shards, "CALL_S", 1e-6)
    try:
        with pytest.raises(ClusterStalled, match="did not answer"):
            index.search(np.arange(len(index.x)), 20, scan=sharded.scan)
    finally:
        sharded.close()


def test_small_archives_and_one_node_stay_on_the_driver(ray_cluster):
    """Automatic: shards only from ``shard_min`` faces on a cluster of several nodes (the
    session's has one); 1 keeps the search on the driver; a count the cluster's CPUs cannot hold
    is refused, not left waiting."""
    from facepipe.errors import ClusterStalled

    assert shard_count(10**6, IndexConfig()) == 1
    assert shard_count(10**7, IndexConfig()) == 1  # one node
    assert shard_count(10**7, IndexConfig(shards=1)) == 1
    assert shard_count(100, IndexConfig(shards=2)) == 2
    with pytest.raises(ClusterStalled, match="need a CPU each"):
        shard_count(100, IndexConfig(shards=64))


def _identities(out) -> dict:
    t = pq.read_table(out / "face_identity").to_pydict()
    return dict(zip(t["face_id"], t["identity_id"]))


def test_a_sharded_night_gives_one_nodes_identities(ray_cluster, tmp_path):
    """Two nights (the first in full, the second incremental over kept lists) with the search on
    2 shards give the identities, events and kept index of the same nights on the driver."""
    x, _ = people(300, 8, seed=3)
    ids = face_ids(len(x))
    perm = np.random.default_rng(1).permutation(len(x))
    first, second = perm[:2000], perm[2000:]
    got = {}
    for shards in (1, 2):
        out = tmp_path / f"shards{shards}"
        cfg = ClusterConfig(threshold=0.45, index=IndexConfig(exact_max=500, nlist=64, nprobe=8, shards=shards))
        write_faces(out, "2026-11-01", [ids[i] for i in first], x[first])
        s1 = run_cluster(str(out), "2026-11-01", "night1", cfg)
        write_faces(out, "2026-11-02", [ids[i] for i in second], x[second])
        s2 = run_cluster(str(out), "2026-11-02", "night2", cfg)
        assert s1["index"]["shards"] == s2["index"]["shards"] == shards and s2["mode"] == "incremental"
        assert not (out / "_staging" / "night2" / STAGED).exists()
        got[shards] = (_identities(out), s1["merges"], s2["merges"], s2["index"]["lists_changed"])
    assert got[2] == got[1]


def test_a_shard_that_cannot_load_its_file_fails_the_night_and_ends_the_others(ray_cluster, tmp_path, monkeypatch):
    """A shard whose file is gone fails the night with the error that says so (it is not
    restarted forever), and the shards already up and the files are ended with it."""
    from ray.util.state import list_actors

    import facepipe.stages.cluster.shards as shards

    real = shards.stage_shards

    def one_lost(output, run_id, index, ranges):  # the test's fault: a shard's file deleted once written
        paths = real(output, run_id, index, ranges)
        os.remove(paths[1])
        return paths

    monkeypatch.setattr(shards, "stage_shards", one_lost)
    with pytest.raises(Exception, match="shard-00001.parquet"):
        ShardedIVF(_index(), Output(str(tmp_path)), "night", 2)
    actors = list_actors(address=ray_cluster.dashboard_url, filters=[("class_name", "=", "IndexShard")], limit=1000)
    assert not [a for a in actors if a.state != "DEAD"]
    assert not (tmp_path / "_staging" / "night" / STAGED).exists()
