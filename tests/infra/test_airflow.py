"""The nightly orchestration, for real: ray_submit's submit / poll / retry / stop rules against a
real `ray start --head` cluster (Ray's Jobs SDK, real jobs), and the DAG run by the current
Airflow 3 (``airflow dags test``, in a venv of its own built from infra/airflow's requirements
files and cached by their hash) submitting the real nightly job to that cluster."""

import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BIN, REPO, ray_head

from facepipe.model_files import cache_dir
from testbed.procs import end, own_processes

AIRFLOW = REPO / "infra" / "airflow"
_spec = importlib.util.spec_from_file_location("ray_submit", AIRFLOW / "ray_submit.py")
ray_submit = importlib.util.module_from_spec(_spec)
sys.modules["ray_submit"] = ray_submit
_spec.loader.exec_module(ray_submit)

FAST = ray_submit.RetryPolicy(attempts=2, backoff_s=0.1, poll_s=0.5, unreachable_s=3, timeout_s=120, stop_wait_s=60)


def _py(code: str) -> str:
    return f'python -c "{code}"'


def _ids(client, name: str) -> dict[str, str]:
    return {
        j.submission_id: str(j.status.value)
        for j in client.list_jobs()
        if (j.submission_id or "").startswith(name + "-")
    }


@pytest.mark.ray
def test_a_job_that_succeeds_is_submitted_once(ray_cluster):
    r = ray_submit.run_job(ray_cluster.dashboard_url, "t-ok", _py("print(42)"), policy=FAST)
    assert r.ok and r.attempts == 1 and r.submission_id == "t-ok-1" and r.started_ms > 0


@pytest.mark.ray
def test_exit_2_is_permanent_and_not_retried(ray_cluster):
    r = ray_submit.run_job(ray_cluster.dashboard_url, "t-bad-input", _py("import sys; sys.exit(2)"), policy=FAST)
    assert not r.ok and r.attempts == 1 and r.exit_code == 2 and "permanent" in r.message


@pytest.mark.ray
def test_other_failures_are_retried_with_new_attempt_ids(ray_cluster):
    r = ray_submit.run_job(ray_cluster.dashboard_url, "t-flaky", _py("import sys; sys.exit(1)"), policy=FAST)
    assert not r.ok and r.attempts == 2 and [h["submission_id"] for h in r.history] == ["t-flaky-1", "t-flaky-2"]


@pytest.mark.ray
def test_a_restarted_submitter_waits_for_its_running_attempt_instead_of_resubmitting(ray_cluster):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url)
    client.submit_job(entrypoint=_py("import time; time.sleep(3)"), submission_id="t-resume-1")
    r = ray_submit.run_job(ray_cluster.dashboard_url, "t-resume", _py("raise SystemExit(9)"), policy=FAST)
    assert r.ok and r.submission_id == "t-resume-1"
    assert list(_ids(client, "t-resume")) == ["t-resume-1"]


@pytest.mark.ray
def test_a_rerun_submits_a_new_attempt_whatever_earlier_ones_ended_with(ray_cluster):
    """A rerun of a night (the input fixed after a permanent failure; a night that succeeded) runs
    the job again under the next free attempt number, never replaying an ended attempt."""
    from ray.job_submission import JobSubmissionClient

    url = ray_cluster.dashboard_url
    bad = ray_submit.run_job(url, "t-rerun", _py("import sys; sys.exit(2)"), policy=FAST)
    assert not bad.ok and bad.submission_id == "t-rerun-1"
    fixed = ray_submit.run_job(url, "t-rerun", _py("print('fixed')"), policy=FAST)
    assert fixed.ok and fixed.submission_id == "t-rerun-2" and fixed.attempts == 1
    again = ray_submit.run_job(url, "t-rerun", _py("print('again')"), policy=FAST)
    assert again.ok and again.submission_id == "t-rerun-3"
    client = JobSubmissionClient(url)
    assert "again" in client.get_job_logs("t-rerun-3")
    assert _ids(client, "t-rerun") == {"t-rerun-1": "FAILED", "t-rerun-2": "SUCCEEDED", "t-rerun-3": "SUCCEEDED"}


@pytest.mark.ray
def test_an_attempt_past_its_timeout_is_stopped_and_has_ended_before_the_next_starts(ray_cluster):
    from ray.job_submission import JobSubmissionClient

    policy = ray_submit.RetryPolicy(attempts=2, backoff_s=0.1, poll_s=0.5, timeout_s=3, stop_wait_s=60)
    r = ray_submit.run_job(ray_cluster.dashboard_url, "t-slow", _py("import time; time.sleep(600)"), policy=policy)
    assert not r.ok and [h["status"] for h in r.history] == ["STOPPED", "STOPPED"]
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    first, second = (client.get_job_info(f"t-slow-{k}") for k in (1, 2))
    assert first.end_time <= second.start_time, "attempt 2 started while attempt 1 was still winding down"


@pytest.mark.ray
def test_a_killed_submitter_stops_its_ray_job_and_waits_for_it_to_end(ray_cluster, tmp_path):
    """SIGTERM to the submitter (Airflow stopping its task) stops the attempt it waits for; the
    submitter exits only once Ray says the job ended."""
    from ray.job_submission import JobSubmissionClient

    script = tmp_path / "submit.py"
    script.write_text(
        f"import sys; sys.path.insert(0, {str(AIRFLOW)!r}); import ray_submit\n"
        f"ray_submit.run_job({ray_cluster.dashboard_url!r}, 't-killed', {_py('import time; time.sleep(600)')!r},"
        " policy=ray_submit.RetryPolicy(poll_s=0.5))\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], env=ray_cluster.env, stderr=subprocess.PIPE, text=True)
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.time() + 60
    while _ids(client, "t-killed").get("t-killed-1") != "RUNNING":
        assert time.time() < deadline and proc.poll() is None, "the job never ran"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode != 0 and "stopping t-killed-1" in err, err[-2000:]
    assert _ids(client, "t-killed") == {"t-killed-1": "STOPPED"}


@pytest.mark.ray
def test_the_entrypoint_runs_on_the_clusters_python_whatever_python_is_first_on_path(ray_cluster, tmp_path):
    """A `python` first on the head's PATH that is not the cluster's interpreter (here one that
    always fails) does not run the job; arguments with spaces and quotes arrive intact."""
    from ray.job_submission import JobSubmissionClient

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text("#!/bin/sh\nexit 97\n")
    (fake / "python").chmod(0o755)
    env = {"env_vars": {"PATH": f"{fake}:/usr/bin:/bin"}}
    probe = tmp_path / "probe dir" / "facepipe_probe.py"
    probe.parent.mkdir()
    probe.write_text("import json, sys; print(json.dumps([sys.executable, sys.argv[1:]]))\n")
    entry = ray_submit.module_entrypoint("facepipe_probe", ["a b", "it's", "$HOME"])
    entry = f"cd {ray_submit.shlex.quote(str(probe.parent))} && {entry}"
    r = ray_submit.run_job(ray_cluster.dashboard_url, "t-python", entry, env, policy=FAST)
    logs = JobSubmissionClient(ray_cluster.dashboard_url).get_job_logs(r.submission_id)
    assert r.ok, logs[-2000:]
    exe, args = json.loads(logs.strip().splitlines()[-1])
    assert args == ["a b", "it's", "$HOME"]
    assert Path(exe).resolve() == Path(sys.executable).resolve() or Path(exe).parent == BIN, exe


@pytest.mark.ray
def test_a_cluster_with_token_auth_runs_jobs_for_a_submitter_with_its_token_only(tmp_path):
    """Ray's token authentication (RAY_AUTH_MODE=token on the cluster): the submitter, in a
    process of its own as Airflow runs it, is refused with a message naming RAY_AUTH_TOKEN
    without the token, and runs the job with it (in RAY_AUTH_TOKEN, or a file RAY_AUTH_TOKEN_PATH names)."""
    token = secrets.token_hex(16)
    (tmp_path / "token").write_text(token)
    with ray_head(cpus=1, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token) as head:
        # no ~/.ray/auth_token of the machine's user, no token of the test session
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(tmp_path)}

        def submit(name: str, **env: str) -> subprocess.CompletedProcess:
            argv = [sys.executable, str(AIRFLOW / "ray_submit.py"), "--address", head.dashboard_url, "--name", name,
                    "--attempts", "1", "--", "python", "-c", "print(42)"]  # fmt: skip
            return subprocess.run(argv, env=base | env, capture_output=True, text=True, timeout=180)

        refused = submit("auth-none")
        assert refused.returncode == 1 and "RAY_AUTH_TOKEN" in refused.stderr, refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr
        by_env = submit("auth-env", RAY_AUTH_TOKEN=token)
        assert by_env.returncode == 0 and json.loads(by_env.stdout.splitlines()[-1])["ok"], by_env.stderr[-2000:]
        by_file = submit("auth-file", RAY_AUTH_TOKEN_PATH=str(tmp_path / "token"))
        assert by_file.returncode == 0, by_file.stderr[-2000:]


def test_an_unreachable_cluster_fails_with_a_clear_message_after_backing_off():
    slept = []
    with pytest.raises(ray_submit.SubmitError, match="unreachable"):
        ray_submit.run_job("http://127.0.0.1:9", "t-down", "true", policy=FAST, sleep=slept.append)
    assert slept and slept == sorted(slept)  # backing off, not hammering


def test_the_retry_budget_fits_inside_the_tasks_time_limit():
    p = ray_submit.RetryPolicy(attempts=3, backoff_s=300, timeout_s=4 * 3600)
    assert p.budget_s() == 3 * (4 * 3600 + p.stop_wait_s + p.unreachable_s) + 300 + 600
    dag_source = (AIRFLOW / "facepipe_nightly.py").read_text()
    assert "execution_timeout=timedelta(seconds=POLICY.budget_s() + 900)" in dag_source


# --- the DAG on a real Airflow ------------------------------------------------------------------

AIRFLOW_REQUIREMENTS = (AIRFLOW / "requirements-test.txt", AIRFLOW / "requirements.txt")
AIRFLOW_VERSION = next(
    ln.split("==")[1].strip()
    for ln in AIRFLOW_REQUIREMENTS[0].read_text().splitlines()
    if ln.startswith("apache-airflow==")
)


@pytest.fixture(scope="session")
def airflow_bin() -> Path:
    """A venv with the current Airflow 3 and the workers' requirements, built once per content of
    the requirements files (and Python version) under the facepipe cache: about a minute to build."""
    key = hashlib.sha256(b"".join(p.read_bytes() for p in AIRFLOW_REQUIREMENTS) + sys.version.encode()).hexdigest()
    root = cache_dir()
    venv = root / f"airflow-venv-{key[:16]}"
    if not (venv / ".complete").is_file():
        # a venv's scripts name its own path: it is built where it will live
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        done = subprocess.run([*pip, "-r", str(AIRFLOW_REQUIREMENTS[0])], capture_output=True, text=True, cwd=AIRFLOW)
        assert done.returncode == 0, done.stderr[-3000:]
        (venv / ".complete").write_text(AIRFLOW_VERSION)
    return venv / "bin"


@pytest.fixture(scope="module")
def airflow(airflow_bin, ray_cluster, tmp_path_factory):
    """`airflow` in a home of its own (SQLite metadata DB, migrated), the DAGs folder holding the
    two files of infra/airflow as users deploy them, pointed at the test Ray cluster."""
    home = tmp_path_factory.mktemp("airflow")
    dags = home / "dags"
    dags.mkdir()
    for name in ("facepipe_nightly.py", "ray_submit.py"):
        shutil.copy(AIRFLOW / name, dags / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHON", "FACEPIPE_"))}
    env.update(
        PATH=f"{airflow_bin}:/usr/bin:/bin",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        FACEPIPE_RAY_ADDRESS=ray_cluster.dashboard_url,
        RAY_AUTH_MODE="disabled",
    )

    def run(*args: str, timeout: float = 240, **extra: str) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(
            [str(airflow_bin / "airflow"), *args],
            env={**env, **extra},
            cwd=home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            end(own_processes(proc.pid, str(home)))
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    version = run("version")
    assert version.returncode == 0 and version.stdout.strip().splitlines()[-1] == AIRFLOW_VERSION, version.stdout
    migrated = run("db", "migrate")
    assert migrated.returncode == 0, migrated.stdout[-3000:]
    return run


def _night(airflow, dt: str, inputs: Path, out: Path) -> subprocess.CompletedProcess:
    return airflow("dags", "test", "facepipe_nightly", dt, FACEPIPE_INPUT=str(inputs), FACEPIPE_OUTPUT=str(out))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_airflow_runs_a_night_fails_bad_input_once_and_reruns_replace_the_night(airflow, ray_cluster, photos, tmp_path):
    """`airflow dags test facepipe_nightly DATE` on the current Airflow 3, against the test Ray
    cluster, running the real nightly job (the installed package's module): a missing input fails
    the DAG run at once (exit 2, one attempt, no retry); rerun after the input is fixed, the night
    runs and writes its manifest; rerun again, the night runs again (a new attempt) and replaces it."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url)
    dt, name = "2026-11-03", "facepipe-nightly-2026-11-03"
    inputs, out = tmp_path / "in", tmp_path / "out"

    bad = _night(airflow, dt, inputs, out)
    assert bad.returncode != 0 and "permanent=True" in bad.stdout and "state=failed" in bad.stdout, bad.stdout[-3000:]
    assert _ids(client, name) == {f"{name}-1": "FAILED"}, bad.stdout[-3000:]
    assert client.get_job_info(f"{name}-1").driver_exit_code == 2
    assert not (out / "_runs").exists()

    inputs.mkdir()
    for photo in ("obama.jpg", "t1.jpg"):
        shutil.copy(photos[photo], inputs / photo)
    good = _night(airflow, dt, inputs, out)
    assert _ids(client, name) == {f"{name}-1": "FAILED", f"{name}-2": "SUCCEEDED"}, good.stdout[-3000:]
    manifest = json.loads((out / "_runs" / f"nightly-{dt}.json").read_text())
    assert manifest["counts"]["faces"] == 1 + 6 and manifest["run_id"] == f"nightly-{dt}"
    assert good.returncode == 0 and "state=success" in good.stdout, good.stdout[-3000:]
    assert "'run_id': 'nightly-2026-11-03'" in good.stdout and "'faces': 7" in good.stdout  # check_manifest's result

    again = _night(airflow, dt, inputs, out)
    assert again.returncode == 0 and _ids(client, name)[f"{name}-3"] == "SUCCEEDED", again.stdout[-3000:]
    replaced = json.loads((out / "_runs" / f"nightly-{dt}.json").read_text())
    assert replaced["started_at"] > manifest["started_at"] or replaced["finished_at"] > manifest["finished_at"]
    import duckdb

    n = duckdb.sql(f"select count(*), count(distinct face_id) from read_parquet('{out}/faces/*/*.parquet')").fetchall()
    assert n == [(7, 7)], "a rerun of the night added rows instead of replacing them"


def test_the_dag_imports_on_airflow_with_no_deprecated_airflow_2_names(airflow):
    listed = airflow("dags", "list-import-errors", "-o", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout.strip().splitlines()[-1] or "[]") == [], listed.stdout
    source = (AIRFLOW / "facepipe_nightly.py").read_text()
    for old in ("airflow.operators.python", "airflow.models", "airflow.exceptions"):
        assert old not in source
