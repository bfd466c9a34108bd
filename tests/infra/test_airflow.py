"""The nightly orchestration: ray_submit's submit / poll / retry rules against a real `ray start
--head` cluster (Ray's Jobs SDK, real jobs), and the DAG file's task graph by parsing it (Airflow
itself is not installed in the test environment: too heavy for what it would add)."""

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

AIRFLOW = Path(__file__).resolve().parents[2] / "infra" / "airflow"
_spec = importlib.util.spec_from_file_location("ray_submit", AIRFLOW / "ray_submit.py")
ray_submit = importlib.util.module_from_spec(_spec)
sys.modules["ray_submit"] = ray_submit
_spec.loader.exec_module(ray_submit)

FAST = ray_submit.RetryPolicy(attempts=2, backoff_s=0.1, poll_s=0.5, unreachable_s=3, timeout_s=120)


def _py(code: str) -> str:
    return f'python -c "{code}"'


@pytest.mark.slow
def test_a_job_that_succeeds_is_submitted_once(ray_cluster):
    r = ray_submit.run_job(ray_cluster.dashboard_url, "t-ok", _py("print(42)"), policy=FAST)
    assert r.ok and r.attempts == 1 and r.submission_id == "t-ok-1"


@pytest.mark.slow
def test_exit_2_is_permanent_and_not_retried(ray_cluster):
    r = ray_submit.run_job(ray_cluster.dashboard_url, "t-bad-input", _py("import sys; sys.exit(2)"), policy=FAST)
    assert not r.ok and r.attempts == 1 and r.exit_code == 2 and "permanent" in r.message


@pytest.mark.slow
def test_other_failures_are_retried_with_new_attempt_ids(ray_cluster):
    r = ray_submit.run_job(ray_cluster.dashboard_url, "t-flaky", _py("import sys; sys.exit(1)"), policy=FAST)
    assert not r.ok and r.attempts == 2 and [h["submission_id"] for h in r.history] == ["t-flaky-1", "t-flaky-2"]


@pytest.mark.slow
def test_a_restarted_submitter_waits_for_its_running_attempt_instead_of_resubmitting(ray_cluster):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url)
    client.submit_job(entrypoint=_py("import time; time.sleep(3)"), submission_id="t-resume-1")
    r = ray_submit.run_job(ray_cluster.dashboard_url, "t-resume", _py("raise SystemExit(9)"), policy=FAST)
    assert r.ok and r.submission_id == "t-resume-1"
    assert sum((j.submission_id or "").startswith("t-resume") for j in client.list_jobs()) == 1


def test_an_unreachable_cluster_fails_with_a_clear_message_after_backing_off():
    slept = []
    with pytest.raises(ray_submit.SubmitError, match="unreachable"):
        ray_submit.run_job("http://127.0.0.1:9", "t-down", "true", policy=FAST, sleep=slept.append)
    assert slept and slept == sorted(slept)  # backing off, not hammering


def test_the_dag_runs_the_job_then_checks_its_manifest():
    """Parse infra/airflow/facepipe_nightly.py: one DAG, nightly, no catch-up, no overlapping
    runs, Airflow retries off (ray_submit retries), tasks facepipe_run >> check_manifest."""
    tree = ast.parse((AIRFLOW / "facepipe_nightly.py").read_text())
    dag = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DAG")
    kw = {k.arg: k.value for k in dag.keywords}
    assert ast.literal_eval(kw["dag_id"]) == "facepipe_nightly" and ast.literal_eval(kw["schedule"]) == "0 2 * * *"
    assert ast.literal_eval(kw["catchup"]) is False and ast.literal_eval(kw["max_active_runs"]) == 1
    tasks = {
        ast.literal_eval(k.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "PythonOperator"
        for k in n.keywords
        if k.arg == "task_id"
    }
    assert tasks == {"facepipe_run", "check_manifest"}
    edges = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.RShift)]
    assert [(e.left.id, e.right.id) for e in edges] == [("run", "check")]
    assert (
        "python jobs/nightly.py {inputs} --output {output} --dt {ds}" in (AIRFLOW / "facepipe_nightly.py").read_text()
    )
