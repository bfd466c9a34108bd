"""`ray job submit` of jobs/extract.py to a real `ray start --head` cluster, as users run it."""

import json
import subprocess
import time
from pathlib import Path

import pytest

import archive
from conftest import REPO

pytestmark = pytest.mark.slow


def test_ray_job_submit_runs_the_extract_job(ray_cluster, photos, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    arch = archive.build(tmp_path / "archive", photos)
    out = tmp_path / "out"
    cmd = [str(Path(ray_cluster.env["PATH"].split(":")[0]) / "ray"), "job", "submit", "--address", ray_cluster.dashboard_url,
           "--working-dir", str(REPO), "--submission-id", "extract-test", "--no-wait", "--",
           "python", "jobs/extract.py", *arch.inputs, "--output", str(out), "--run-id", "job1", "--dt", "2026-11-03",
           "--image-column", "image", "--id-column", "key"]
    subprocess.run(cmd, env=ray_cluster.env, check=True, capture_output=True, cwd=REPO)
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.time() + 300
    while (status := client.get_job_status("extract-test")) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, "job did not finish in 5 minutes"
        time.sleep(1)
    logs = client.get_job_logs("extract-test")
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    manifest = json.loads((out / "_runs" / "job1.json").read_text())
    assert manifest["counts"]["images"] == len(arch.expected_status)
    assert manifest["counts"]["faces"] == sum(arch.expected_faces.values())
    assert "facepipe run job1 finished" in logs
