"""`ray job submit` of jobs/extract.py to a real `ray start --head` cluster, as users run it."""

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO

from testbed import archive

pytestmark = pytest.mark.slow


def _submit(
    ray_cluster, sid: str, args: list[str], script: str = "jobs/nightly.py", env_args: list[str] | None = None
) -> tuple[str, str]:
    """``ray job submit`` of ``script`` with ``args``, as users run it; waits for the end: (status, logs).
    ``env_args``: the submission's runtime-env flags (default: this checkout as the working dir);
    with them the entrypoint is ``args`` alone."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    cmd = [
        str(Path(ray_cluster.env["PATH"].split(":")[0]) / "ray"),
        "job",
        "submit",
        "--address",
        ray_cluster.dashboard_url,
        *(env_args if env_args is not None else ["--working-dir", str(REPO)]),
        "--submission-id",
        sid,
        "--no-wait",
        "--",
        *(args if env_args is not None else ["python", script, *args]),
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


def test_a_runtime_env_pip_list_installs_a_working_job_on_the_cluster(ray_cluster, photos, tmp_path):
    """`ray job submit --runtime-env-json '{"pip": [WHEEL]}'`, no working dir: the cluster's nodes
    install the package from the pip list (no --no-deps extras), the job imports it from the
    runtime env -- not from this checkout -- and a default run finds every face of the photos
    with the face verifier's log-odds (its weights ship inside the package)."""
    from ray.job_submission import JobStatus

    wheels, source = tmp_path / "wheels", tmp_path / "source"
    # built from a copy of what the wheel is made of: setuptools leaves build/ beside the source
    shutil.copytree(REPO / "facepipe", source / "facepipe", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip_wheel, "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("facepipe-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "facepipe/weights/mtcnn_onet.pt" in z.namelist(), "the face verifier's weights are not in the wheel"
    src = tmp_path / "in"
    src.mkdir()
    for name in ("obama.jpg", "t1.jpg"):
        shutil.copy(photos[name], src / name)
    out = tmp_path / "out"
    where = "import facepipe, sys; print('facepipe from', facepipe.__file__, file=sys.stderr)"
    run = f"python -m facepipe.cli run {src} --output {out} --run-id renv --dt 2026-11-03 --no-cluster"
    env_args = ["--runtime-env-json", json.dumps({"pip": [str(wheel)]})]
    # from a folder without the source: the cluster's processes run where `ray start` ran (this checkout)
    entry = ["bash", "-c", f'cd {tmp_path} && python -c "{where}" && {run}']
    status, logs = _submit(ray_cluster, "runtime-env-pip", entry, env_args=env_args)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    origin = next(ln for ln in logs.splitlines() if ln.startswith("facepipe from"))
    assert str(REPO) not in origin and "runtime_resources" in origin, origin
    manifest = json.loads((out / "_runs" / "renv.json").read_text())
    assert manifest["counts"]["faces"] == 1 + 6  # obama, t1's six
    assert manifest["detector"].startswith("yunet")
    faces = pq.read_table(out / "faces", columns=["face_logit"]).column("face_logit").to_pylist()
    assert len(faces) == 7 and all(v is not None and v > 0 for v in faces)


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
