"""Airflow 3 DAG: facepipe every night, submitted to a Ray cluster through Ray's Jobs SDK.

Put this file and ray_submit.py in the DAGs folder; the Airflow workers need
``infra/airflow/requirements.txt`` (Ray's Jobs SDK at the cluster's Ray version, pyarrow to read
the manifest) -- not facepipe, which runs on the Ray cluster. Written for the Task SDK
(``airflow.sdk``, Airflow >= 3.0; tested with ``airflow dags test`` on the version in
requirements-test.txt beside this file).

Settings come from Airflow Variables, else the environment of the same name:
  FACEPIPE_RAY_ADDRESS   the Ray dashboard, http://HEAD:8265
  FACEPIPE_INPUT         the archive prefix; ``{ds}`` is replaced by the night's date. Only files
                         new or changed since earlier nights are processed.
  FACEPIPE_OUTPUT        s3://faces/out
  FACEPIPE_WORKING_DIR   optional: a checkout uploaded with the job (unset when the package is
                         installed on the nodes, as in the repo's Dockerfile)
  FACEPIPE_RUNTIME_ENV   optional: a Ray runtime env as JSON, e.g. {"pip": ["facepipe==0.1.0"]}
  FACEPIPE_PYTHON        optional: the interpreter on the head node (default: the one Ray runs on)
Ray's token authentication: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) in the workers' environment.

The night: the run's logical date; a manual run without one (Airflow 3's default for manual
triggers) takes the day it was triggered; the ``dt`` param (YYYY-MM-DD) overrides both.

Tasks, in order:
  1. facepipe_run  -- submits ``python -m facepipe.jobs.nightly INPUT --output OUT --dt DT`` (run
     id nightly-DT: extract -> publish -> score -> cluster) and waits; retries as ray_submit.py
     says (exit 2 = bad input: no retry). Every run of the task submits a new attempt, so a rerun
     of a night (clear, manual trigger) replaces that night's output; an attempt still running
     from a killed earlier try is waited for, never doubled. Its time limit is the submitter's
     whole retry budget plus a margin; stopped (timeout, marked failed), it stops its Ray job.
  2. check_manifest -- reads OUT/_runs/nightly-DT.json and fails the DAG run unless this run's
     job wrote it (the job publishes the manifest last).
Airflow's own task retries are off: ray_submit.py owns retrying.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param, Variable, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_submit import PERMANENT_EXIT, RetryPolicy, module_entrypoint, run_job  # noqa: E402

POLICY = RetryPolicy(attempts=3, backoff_s=300, timeout_s=4 * 3600)
JOB_MODULE = "facepipe.jobs.nightly"


def _setting(name: str, default: str | None = None) -> str | None:
    return Variable.get(name, default=os.environ.get(name, default))


def _required(name: str) -> str:
    value = _setting(name)
    if not value:
        raise AirflowFailException(f"set the Airflow Variable (or environment variable) {name}")
    return value


def night(context) -> str:
    """The date this DAG run processes, YYYY-MM-DD (see the module text)."""
    if context["params"].get("dt"):
        return str(context["params"]["dt"])
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.date().isoformat() if isinstance(when, datetime) else date.fromisoformat(str(when)[:10]).isoformat()


@task(task_id="facepipe_run", execution_timeout=timedelta(seconds=POLICY.budget_s() + 900))
def facepipe_run() -> dict:
    dt = night(get_current_context())
    args = [_required("FACEPIPE_INPUT").replace("{ds}", dt), "--output", _required("FACEPIPE_OUTPUT"), "--dt", dt]
    runtime_env = json.loads(_setting("FACEPIPE_RUNTIME_ENV") or "{}")
    if wd := _setting("FACEPIPE_WORKING_DIR"):
        runtime_env["working_dir"] = wd
    r = run_job(
        _setting("FACEPIPE_RAY_ADDRESS", "http://127.0.0.1:8265"),
        f"facepipe-nightly-{dt}",
        module_entrypoint(JOB_MODULE, args, _setting("FACEPIPE_PYTHON")),
        runtime_env or None,
        POLICY,
    )
    if not r.ok:
        # a permanent failure must not be retried by anyone; the rest already was
        raise AirflowFailException(
            f"facepipe nightly {dt}: {r.message} (exit {r.exit_code}; permanent={r.exit_code == PERMANENT_EXIT})"
        )
    return {"dt": dt, "submission_id": r.submission_id, "attempts": r.attempts, "started_ms": r.started_ms}


@task(task_id="check_manifest")
def check_manifest(run: dict) -> dict:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(_required("FACEPIPE_OUTPUT"))
    path = f"{root.rstrip('/')}/_runs/nightly-{run['dt']}.json"
    try:
        with fs.open_input_file(path) as f:  # one GET of the whole object: a stream's short last read
            manifest = json.loads(f.read())  # could not hold an S3 error answer (facepipe/storage/s3_reads.py)
    except FileNotFoundError:
        raise AirflowFailException(f"{run['submission_id']} succeeded but wrote no manifest at {path}") from None
    started = datetime.fromisoformat(manifest["started_at"]).timestamp() * 1000
    if run.get("started_ms") and started < run["started_ms"] - 60_000:
        raise AirflowFailException(
            f"{path} is from an earlier run ({manifest['started_at']}), not {run['submission_id']}"
        )
    return {"run_id": manifest.get("run_id"), "dt": run["dt"], "counts": manifest.get("counts")}


with DAG(
    dag_id="facepipe_nightly",
    description="facepipe: faces, outliers and identities of one night's images",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={"dt": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d{2}-\d{2}$", description="night to process")},
    default_args={"owner": "facepipe", "retries": 0},
    tags=["facepipe"],
) as dag:
    check_manifest(facepipe_run())
