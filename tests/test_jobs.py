"""`ray job submit` of jobs/extract.py to a real `ray start --head` cluster, as users run it."""

import json
import subprocess
import time
from pathlib import Path

import archive
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def _submit(ray_cluster, sid: str, args: list[str], script: str = "jobs/nightly.py") -> tuple[str, str]:
    """``ray job submit`` of ``script`` with ``args``, as users run it; waits for the end: (status, logs)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    cmd = [
        str(Path(ray_cluster.env["PATH"].split(":")[0]) / "ray"),
        "job",
        "submit",
        "--address",
        ray_cluster.dashboard_url,
        "--working-dir",
        str(REPO),
        "--submission-id",
        sid,
        "--no-wait",
        "--",
        "python",
        script,
        *args,
    ]
    subprocess.run(cmd, env=ray_cluster.env, check=True, capture_output=True, cwd=REPO)
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.time() + 300
    while (status := client.get_job_status(sid)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, "job did not finish in 5 minutes"
        time.sleep(1)
    return status, client.get_job_logs(sid)


def test_ray_job_submit_runs_the_extract_job(ray_cluster, photos, tmp_path):
    from ray.job_submission import JobStatus

    arch = archive.build(tmp_path / "archive", photos)
    out = tmp_path / "out"
    args = [*arch.inputs, "--output", str(out), "--run-id", "job1", "--dt", "2026-11-03"]
    status, logs = _submit(
        ray_cluster, "extract-test", [*args, "--image-column", "image", "--id-column", "key"], "jobs/extract.py"
    )
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    manifest = json.loads((out / "_runs" / "job1.json").read_text())
    assert manifest["counts"]["images"] == len(arch.expected_status)
    assert manifest["counts"]["faces"] == sum(arch.expected_faces.values())
    assert "facepipe run job1 finished" in logs


def test_nightly_job_is_idempotent_per_date_and_skips_what_is_done(ray_cluster, photos, tmp_path):
    """jobs/nightly.py through `ray job submit`: the last log line is the JSON summary; the same
    night submitted again redoes it in place; the next night finds nothing new."""
    from ray.job_submission import JobStatus

    arch = archive.build(tmp_path / "archive", photos)
    out = tmp_path / "out"
    common = [*arch.inputs, "--output", str(out), "--image-column", "image", "--id-column", "key", "--no-score"]
    summaries = []
    for sid, dt in (("n-a", "2026-11-03"), ("n-b", "2026-11-03"), ("n-c", "2026-11-04")):
        status, logs = _submit(ray_cluster, sid, [*common, "--dt", dt])
        assert status == JobStatus.SUCCEEDED, logs[-3000:]
        summaries.append(json.loads(logs.strip().splitlines()[-1]))
    a, b, c = summaries
    assert a["run_id"] == b["run_id"] == "nightly-2026-11-03" and a["status"] == "ok"
    assert a["counts"]["images"] == b["counts"]["images"] == len(arch.expected_status)
    assert c["counts"]["units_processed"] == 0 and c["counts"]["units_skipped"] == a["counts"]["input_units"]
    assert c["identities"]["identities"] == a["identities"]["identities"]
    # the run report beside each night's manifest, also for a night that found nothing new
    for summary, dt in ((b, "2026-11-03"), (c, "2026-11-04")):
        assert summary["report"] == str(out / "_runs" / f"nightly-{dt}.html")
        assert 'id="identities"' in Path(summary["report"]).read_text()
    import duckdb

    n = duckdb.sql(
        f"select count(*), count(distinct image_id) from read_parquet('{out}/images/*/*.parquet')"
    ).fetchall()[0]
    assert n == (len(arch.expected_status), len(arch.expected_status))


def test_nightly_job_refuses_to_run_without_a_date():
    import sys

    r = subprocess.run(
        [sys.executable, "jobs/nightly.py", "/nowhere", "--output", "/tmp/x"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "nightly: --dt YYYY-MM-DD is required (the night to process; it names the run)"
    ]
