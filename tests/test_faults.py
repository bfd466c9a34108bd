"""Faults with real processes: a model actor's worker killed mid-run, the whole job killed
mid-run. Either way the finished output equals a clean run's (same face ids, no duplicates)."""

import os
import signal
import time

import duckdb
import pytest

import archive
from procs import cli_run, model_actor_pids

pytestmark = pytest.mark.slow


def _cli_run(ray_cluster, inputs, out, run_id, dt="2026-11-05"):
    return cli_run(ray_cluster, inputs, out, run_id, dt, "--image-column", "image", "--id-column", "key", "--no-score")


def _tables(out):
    q = lambda sql: duckdb.sql(sql.replace("OUT", str(out))).fetchall()  # noqa: E731
    return (q("select image_id, status, n_faces from read_parquet('OUT/images/*/*.parquet') order by all"),
            q("select face_id, image_id, face_index from read_parquet('OUT/faces/*/*.parquet') order by all"))


@pytest.fixture(scope="module")
def clean(ray_cluster, photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    arch = archive.build(root / "archive", photos)
    p = _cli_run(ray_cluster, arch.inputs, root / "clean", "clean")
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]
    return arch, _tables(root / "clean")


def test_killing_a_model_actor_worker_mid_run_loses_and_duplicates_nothing(ray_cluster, clean, tmp_path):
    arch, want = clean
    out = tmp_path / "out"
    p = _cli_run(ray_cluster, arch.inputs, out, "faulty")
    deadline, killed = time.time() + 120, None
    while killed is None and time.time() < deadline and p.poll() is None:
        pids = model_actor_pids()
        if pids:
            time.sleep(1.0)  # the actor is up and working on its first batches
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.2)
    log, _ = p.communicate(timeout=600)
    assert killed is not None, "no model actor was seen alive to kill"
    assert p.returncode == 0, log[-3000:]
    assert _tables(out) == want


def test_killing_the_whole_job_then_rerunning_equals_a_clean_run(ray_cluster, clean, tmp_path):
    arch, want = clean
    out = tmp_path / "out"
    p = _cli_run(ray_cluster, arch.inputs, out, "crashy")
    deadline = time.time() + 180
    while not model_actor_pids() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # mid-run: the model actors are working
    assert p.poll() is None, "the run finished before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)  # the driver and everything it started
    p.wait(timeout=60)
    assert not list(out.glob("images/*/*.parquet")), "a killed run must not publish"
    again = _cli_run(ray_cluster, arch.inputs, out, "crashy")
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0, log[-3000:]
    assert _tables(out) == want
    assert not list(out.glob("_staging/crashy/*"))
