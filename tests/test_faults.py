"""Faults with real processes: a model actor's worker killed while it holds a batch, the whole
job killed while a batch is in flight, the driver dying between publishing the tables and
recording the input state. Each time the finished output equals a clean run's (same face ids, no
duplicates). Every test first waits for evidence that the fault hits work in progress -- Ray's
state API showing a batch running on a model actor of *this* job -- and checks afterwards that
work was lost (the killed actor's batches failed; the killed job had written only part of its
rows)."""

import os
import signal
import subprocess
import time

import duckdb
import pyarrow.parquet as pq
import pytest

from testbed import archive
from testbed.procs import cli_run, model_tasks, wait_for_batches_in_flight

pytestmark = pytest.mark.slow


def _cli_run(ray_cluster, inputs, out, run_id, dt="2026-11-05", **faults):
    """The job as a process; ``faults``: see tests/faulty_cli.py."""
    return cli_run(
        ray_cluster, inputs, out, run_id, dt, "--image-column", "image", "--id-column", "key", "--no-score", **faults
    )


def _tables(out):
    q = lambda sql: duckdb.sql(sql.replace("OUT", str(out))).fetchall()  # noqa: E731
    return (
        q("select image_id, status, n_faces from read_parquet('OUT/images/*/*.parquet') order by all"),
        q("select face_id, image_id, face_index from read_parquet('OUT/faces/*/*.parquet') order by all"),
    )


def _finish(p: subprocess.Popen) -> None:
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]


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
    p = _cli_run(ray_cluster, arch.inputs, out, "faulty", batch_delay=1.0)  # batches last long enough to be hit
    job, running = wait_for_batches_in_flight(p)
    victim = running[0].worker_pid
    os.kill(victim, signal.SIGKILL)  # the actor's worker, while Ray reports it running a batch
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]
    lost = {t.task_id for t in model_tasks(ray_cluster.dashboard_url, job, "FAILED") if t.worker_pid == victim}
    assert lost, f"no batch of the killed worker {victim} failed: the kill hit no work in progress"
    rerun = {t.task_id for t in model_tasks(ray_cluster.dashboard_url, job, "FINISHED") if t.attempt_number > 0}
    assert lost <= rerun, "a batch lost with the worker was not run again"
    assert _tables(out) == want


def _staged_images(out, run_id: str) -> int:
    """Rows of the images table a run has written to its staging folder so far."""
    return sum(pq.read_metadata(f).num_rows for f in (out / "_staging" / run_id).glob("images/**/*.parquet"))


def test_killing_the_whole_job_then_rerunning_equals_a_clean_run(ray_cluster, clean, tmp_path):
    arch, want = clean
    out = tmp_path / "out"
    p = _cli_run(ray_cluster, arch.inputs, out, "crashy", batch_delay=1.0)
    wait_for_batches_in_flight(p)
    os.killpg(p.pid, signal.SIGKILL)  # the driver and everything it started, with a batch in flight
    p.wait(timeout=60)
    assert _staged_images(out, "crashy") < len(want[0]), "the job had written every row before it was killed"
    assert not list(out.glob("images/*/*.parquet")), "a killed run must not publish"
    again = _cli_run(ray_cluster, arch.inputs, out, "crashy")
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0, log[-3000:]
    assert _tables(out) == want
    assert not list(out.glob("_staging/crashy/*"))


@pytest.mark.parametrize("step", ["purge", "record"])
def test_a_crash_between_publishing_and_recording_state_is_repaired_by_the_rerun(ray_cluster, photos, tmp_path, step):
    """docs/operations.md: a driver that dies after publishing (step 3) and before recording the
    input state (step 5) -- before purging a changed unit's old rows, or after -- leaves the state
    as it was; the rerun of the same run id plans the same units, replaces its own files and
    purges what is still there. Night 2 changes a file of night 1 and crashes at ``step``."""
    import shutil

    src = tmp_path / "archive"
    src.mkdir()
    for n in ("obama.jpg", "biden.jpg"):
        shutil.copy(photos[n], src / n)
    out = tmp_path / "out"
    _finish(_cli_run(ray_cluster, [str(src)], out, "n1", dt="2026-11-01"))
    shutil.copy(photos["t1.jpg"], src / "biden.jpg")  # changed content under the same name
    os.utime(src / "biden.jpg", (time.time() + 10, time.time() + 10))
    crashed = _cli_run(ray_cluster, [str(src)], out, "n2", dt="2026-11-02", crash_at=step)
    log, _ = crashed.communicate(timeout=600)
    assert crashed.returncode == 137, log[-3000:]
    assert list(out.glob("faces/dt=2026-11-02/part-n2-*.parquet")), "the crash came before publishing"
    assert not (out / "_runs" / "n2.json").exists()
    _finish(_cli_run(ray_cluster, [str(src)], out, "n2", dt="2026-11-02"))
    clean = tmp_path / "clean"
    _finish(_cli_run(ray_cluster, [str(src)], clean, "clean", dt="2026-11-02"))
    assert _tables(out) == _tables(clean)
