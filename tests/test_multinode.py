"""The job on a multi-node Ray cluster: Ray's own multi-node test cluster (``ray.cluster_utils.
Cluster``, tests/multinode.py) on this machine -- a head and two worker nodes, each a raylet with
its own object store, CPUs and workers; the two workers advertise the custom resource the model
actors ask for (``--model-resource model_slot``), the head does not. Input and output are on the
session's S3 server (SeaweedFS on 127.0.0.1), and the job runs as a process of its own.

- The output of a run across the three nodes equals a one-node run's (the session's cluster):
  every image row, every face, its box and its embedding. The model actors ran only on the nodes
  that advertise the resource; decoding ran on more than one node.
- A local path is refused before any work, with one line that says why and what to do.
- A node lost while a model actor on it holds a batch: the run finishes with output equal to a
  clean run's, or fails with exit 3 ("cluster error") and the rerun of the same run id does.
- The identity stage's neighbour search on shards over the three nodes (``facepipe cluster
  --cluster-shards 3``, faces on S3) gives the identities the driver alone gives, with a shard's
  process killed while the night holds them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.dataset as pads
import pytest

from facepipe.storage import fs as fsio
from testbed import archive
from testbed.cluster_faces import face_ids, people, write_faces
from testbed.procs import (
    REPO,
    STARTED,
    cli_run,
    end,
    free_ports,
    job_of,
    model_tasks,
    own_processes,
    state_address,
    wait_for_batches_in_flight,
)

pytestmark = pytest.mark.slow

ARCHIVE, OUT = "multinode-archive", "multinode-out"
SLOT = "model_slot"
NODES = [
    {"name": "head", "num_cpus": 1},
    {"name": "a", "num_cpus": 1, "resources": {SLOT: 1}},
    {"name": "b", "num_cpus": 1, "resources": {SLOT: 1}},
]


@dataclass
class MultiNode:
    """The cluster process of tests/multinode.py: its GCS address (for jobs), its dashboard URL
    (for the state API: testbed/procs.py), node ids by name, and the environment a job connecting
    to it runs with (cli_run's ``ray_cluster``)."""

    address: str
    dashboard_url: str
    nodes: dict[str, str]
    env: dict
    proc: subprocess.Popen

    def command(self, line: str, expect: str, timeout: float = 120) -> str:
        """Send one command; return its answer line (which starts with ``expect``)."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = _readline(self.proc, timeout)
        assert answer.startswith(expect), f"cluster answered {answer!r} to {line!r}"
        return answer


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not got:
        raise AssertionError(f"the multi-node cluster said nothing in {timeout:.0f}s")
    if not got[0]:
        raise AssertionError(f"the multi-node cluster ended (exit {proc.wait(10)}) without answering")
    return got[0].strip()


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """Head + two worker nodes, started by a process of its own (its own temp dir and free
    ports); ended by ending that process's session, whatever a test did to it."""
    temp = Path(tempfile.mkdtemp(prefix="fpmn-", dir="/tmp"))  # short: socket paths must fit 107 bytes
    gcs, dash, agent, m1, m2 = free_ports(5)
    env = {
        **ray_cluster.env,
        "FP_GCS_PORT": str(gcs),
        "FP_DASHBOARD_PORT": str(dash),
        "FP_AGENT_PORT": str(agent),
        "DASHBOARD_METRIC_PORT": str(m1),
        "AUTOSCALER_METRIC_PORT": str(m2),
    }
    env.pop("RAY_ADDRESS", None)
    # Ray's Cluster writes its address to $RAY_TMPDIR/ray/ray_current_cluster (by default the
    # machine-wide /tmp/ray, which a plain ray.init() reads): kept inside this cluster's own dir
    (temp / "ray").mkdir()
    env["RAY_TMPDIR"] = str(temp)
    log = open(temp / "cluster.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "multinode.py"), str(temp), json.dumps(NODES)],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    try:
        try:
            info = json.loads(_readline(proc, 180))
        except AssertionError as e:
            log.flush()
            raise AssertionError(f"{e}; its log ends:\n{(temp / 'cluster.log').read_text()[-3000:]}") from None
        yield MultiNode(info["address"], f"http://127.0.0.1:{dash}", info["nodes"], ray_cluster.env, proc)
    finally:
        try:
            proc.stdin.write("quit\n")
            proc.stdin.close()
            proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        end(own_processes(proc.pid, str(temp)))
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _run(ray_cluster, inputs, out, run_id, *extra, **faults) -> subprocess.Popen:
    return cli_run(
        ray_cluster, inputs, out, run_id, "2026-11-09", "--image-column", "image", "--id-column", "key",
        "--no-score", *extra, **faults,
    )  # fmt: skip


def _finish(p: subprocess.Popen, code: int = 0) -> str:
    log, _ = p.communicate(timeout=600)
    assert p.returncode == code, log[-3000:]
    return log


def _tables(out: str):
    """(image rows, face rows with boxes, embeddings by face id) of an s3:// output."""
    fs = fsio.s3_filesystem()
    root = out[len("s3://") :]
    images = pads.dataset(f"{root}/images", filesystem=fs, format="parquet", partitioning="hive").to_table()  # noqa: F841
    faces = pads.dataset(f"{root}/faces", filesystem=fs, format="parquet", partitioning="hive").to_table()
    rows = duckdb.sql("select image_id, source_uri, status, n_faces from images order by all").fetchall()
    face_rows = duckdb.sql("select face_id, image_id, face_index, x1, y1, x2, y2 from faces order by all").fetchall()
    emb = dict(zip(faces.column("face_id").to_pylist(), np.asarray(faces.column("embedding").to_pylist())))
    return rows, face_rows, emb


def _assert_same(got, want) -> None:
    assert got[0] == want[0], "image rows differ"
    assert [r[:3] for r in got[1]] == [r[:3] for r in want[1]], "faces differ"
    np.testing.assert_allclose([r[3:] for r in got[1]], [r[3:] for r in want[1]], atol=1e-3)
    for face_id, e in want[2].items():
        np.testing.assert_allclose(got[2][face_id], e, atol=1e-5, err_msg=face_id)


@pytest.fixture(scope="module")
def clean(seaweedfs, ray_cluster, photos, tmp_path_factory):
    """The archive on S3 and a one-node run's tables (the session's cluster)."""
    c = seaweedfs.client
    for b in (ARCHIVE, OUT):
        c.create_bucket(Bucket=b)
    root = tmp_path_factory.mktemp("multinode")
    arch = archive.build(root, photos, prefix=f"s3://{ARCHIVE}/night")
    archive.upload(c, ARCHIVE, root, "night")
    _finish(_run(ray_cluster, arch.inputs, f"s3://{OUT}/one-node", "one-node"))
    return arch, _tables(f"s3://{OUT}/one-node")


def _actor_nodes(state_url: str, job: str) -> set[str]:
    from ray.util.state import list_actors

    actors = list_actors(
        address=state_address(state_url), filters=[("job_id", "=", job)], limit=10_000, raise_on_missing_output=False
    )
    return {a.node_id for a in actors if "MapWorker" in (a.class_name or "")}


def _task_nodes(state_url: str, job: str) -> set[str]:
    """Nodes that ran the job's plain tasks (read, decode, write; not actor calls)."""
    from ray.util.state import list_tasks

    tasks = list_tasks(
        address=state_address(state_url), filters=[("job_id", "=", job)], limit=10_000, raise_on_missing_output=False
    )
    return {t.node_id for t in tasks if not t.actor_id and t.node_id}


def test_a_run_across_three_nodes_equals_a_one_node_run(cluster, clean):
    arch, want = clean
    p = _run(cluster, arch.inputs, f"s3://{OUT}/three-nodes", "three-nodes", "--model-resource", SLOT)
    job = None
    while p.poll() is None and job is None:
        job = job_of(cluster.dashboard_url, p.pid)
        time.sleep(0.2)
    _finish(p)
    _assert_same(_tables(f"s3://{OUT}/three-nodes"), want)
    job = job or job_of(cluster.dashboard_url, p.pid)
    assert _actor_nodes(cluster.dashboard_url, job) == {cluster.nodes["a"], cluster.nodes["b"]}, (
        "the model actors must run on the two nodes with the model resource, one each"
    )
    assert len(_task_nodes(cluster.dashboard_url, job)) >= 2, "the read/decode/write tasks all ran on one node"


def test_a_local_path_is_refused_before_any_work(cluster, photos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photos["obama.jpg"], src / "obama.jpg")
    p = cli_run(cluster, [str(src)], tmp_path / "out", "local", "2026-11-09", "--no-score")
    log = _finish(p, code=2)
    line = next(ln for ln in log.splitlines() if ln.startswith("facepipe run: error:"))
    assert "3 nodes" in line and "--shared-paths" in line and "s3://" in line, line
    assert "Traceback" not in log
    assert not (tmp_path / "out" / "images").exists(), "work was done before the refusal"


def _cluster_night(env: dict, out: str, *extra: str) -> subprocess.Popen:
    """``facepipe cluster`` over ``out`` (its faces only: no extraction), the kept ivf index forced."""
    cmd = [sys.executable, "-m", "facepipe.cli", "cluster", "--output", out, "--run-id", "night1", "--dt", "2026-11-09"]
    p = subprocess.Popen(
        [*cmd, "--knn", "ivf", *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    STARTED.append(p)  # ended by conftest if the test fails first
    return p


def _shards(state_url: str, detail: bool = False) -> list:
    from ray.util.state import list_actors

    return list_actors(
        address=state_address(state_url), filters=[("class_name", "=", "IndexShard")], detail=detail,
        limit=10_000, raise_on_missing_output=False,
    )  # fmt: skip


def test_identities_searched_on_shards_over_three_nodes_are_the_drivers_with_a_shard_killed(cluster, seaweedfs):
    """32,000 synthetic faces on S3, clustered twice: the search on the driver, then on 3 index
    shards, one a node (Ray actors loading their faces from files in the output). One shard's
    process is killed (SIGKILL) as soon as the three are up: Ray restarts it, it reloads its file,
    and the identities are the driver's, face by face. (tests/stages/cluster/test_shards.py
    places a kill inside the search itself.)"""
    c = seaweedfs.client
    with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou, c.exceptions.BucketAlreadyExists):
        c.create_bucket(Bucket=OUT)  # (made by the tests before; this one may run alone)
    x, _ = people(4000, 8, seed=7)
    ids, s3 = face_ids(len(x)), fsio.s3_filesystem()
    for name in ("shards-driver", "shards-three"):
        write_faces(f"{OUT}/{name}", "2026-11-09", ids, x, filesystem=s3)
    _finish(_cluster_night(cluster.env, f"s3://{OUT}/shards-driver", "--cluster-shards", "1"))
    p = _cluster_night(
        {**cluster.env, "RAY_ADDRESS": cluster.address}, f"s3://{OUT}/shards-three", "--cluster-shards", "3"
    )
    deadline, alive = time.monotonic() + 300, []
    while p.poll() is None and len(alive) < 3 and time.monotonic() < deadline:
        alive = [a for a in _shards(cluster.dashboard_url) if a.state == "ALIVE"]
        time.sleep(0.05)
    assert len(alive) == 3, f"the shards never came up: {alive}"
    os.kill(alive[0].pid, signal.SIGKILL)
    log = _finish(p)
    assert "searched on 3 Ray actors" in log, log[-3000:]
    assert {a.node_id for a in alive} == set(cluster.nodes.values()), "the shards were not one a node"
    restarts = {a.actor_id: a.num_restarts for a in _shards(cluster.dashboard_url, detail=True)}
    assert restarts[alive[0].actor_id] >= 1, "the killed shard was not restarted"

    def identities(name: str) -> dict:
        t = pads.dataset(f"{OUT}/{name}/face_identity", filesystem=s3, format="parquet").to_table()
        return dict(zip(t.column("face_id").to_pylist(), t.column("identity_id").to_pylist()))

    want = identities("shards-driver")
    assert len(set(want.values())) > 3000 and identities("shards-three") == want


def test_losing_a_node_that_holds_model_batches_loses_and_duplicates_nothing(cluster, clean):
    """Runs last in this module: it removes a node (and adds a replacement, as an autoscaler
    would, so the pool can come back to its size)."""
    arch, want = clean
    out = f"s3://{OUT}/node-lost"
    p = _run(cluster, arch.inputs, out, "node-lost", "--model-resource", SLOT, batch_delay=1.0)
    job, running = wait_for_batches_in_flight(p)
    names = {v: k for k, v in cluster.nodes.items()}
    victim = names[running[0].node_id]
    assert victim in ("a", "b"), f"a model batch ran on {victim}"
    cluster.command(f"remove {victim}", "removed")
    cluster.command(f'add {victim}2 {{"num_cpus": 1, "resources": {{"{SLOT}": 1}}}}', "added")
    log, _ = p.communicate(timeout=600)
    lost = [t for t in model_tasks(cluster.dashboard_url, job, "FAILED") if t.node_id == cluster.nodes[victim]]
    print(f"node {victim} removed: exit {p.returncode}; {len(lost)} model batches lost with it")
    assert lost, f"no model batch failed with node {victim}: the loss hit no work in progress"
    if p.returncode == 3:  # the documented alternative: one line, then the rerun completes
        assert "cluster error" in log and "Traceback" not in log, log[-3000:]
        _finish(_run(cluster, arch.inputs, out, "node-lost", "--model-resource", SLOT))
    else:
        assert p.returncode == 0, log[-3000:]
    _assert_same(_tables(out), want)
