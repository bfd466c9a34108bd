"""Airflow DAG: facepipe every night, submitted to a Ray cluster through the Ray Jobs SDK.

Put this file and ray_submit.py in the DAGs folder. Settings come from Airflow Variables (or the
environment): FACEPIPE_RAY_ADDRESS (http://HEAD:8265), FACEPIPE_INPUT (the archive prefix: the job
processes only files new or changed since earlier nights; {ds} is filled with the date if present), FACEPIPE_OUTPUT
(s3://faces/out), FACEPIPE_WORKING_DIR (a checkout of the repo, uploaded with the job; unset when
the package is installed on the nodes).

Tasks, in order:
  1. facepipe_run  -- submits `python jobs/nightly.py INPUT --output OUT --dt {ds}` (run id
     nightly-{ds}; extract -> publish -> score -> cluster) and waits; retries as ray_submit.py
     says (exit 2 = bad input: no retry). The run id is the date, so a rerun of a night
     replaces that night's output instead of adding to it.
  2. check_manifest -- reads OUT/_runs/nightly-{ds}.json and fails the DAG run when the job
     wrote no manifest (it publishes the manifest last).
Airflow's own task retries are off: ray_submit.py owns retrying, with attempt ids it can find
again after an Airflow worker restart.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

from airflow import DAG
from airflow.exceptions import AirflowFailException
from airflow.models import Variable
from airflow.operators.python import PythonOperator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_submit import PERMANENT_EXIT, RetryPolicy, run_job  # noqa: E402


def _setting(name: str, default: str | None = None) -> str | None:
    return Variable.get(name, default_var=os.environ.get(name, default))


def facepipe_run(ds: str, **_) -> dict:
    inputs = _setting("FACEPIPE_INPUT").format(ds=ds)
    output = _setting("FACEPIPE_OUTPUT")
    entry = f"python jobs/nightly.py {inputs} --output {output} --dt {ds}"
    wd = _setting("FACEPIPE_WORKING_DIR")
    r = run_job(
        _setting("FACEPIPE_RAY_ADDRESS", "http://127.0.0.1:8265"),
        f"facepipe-nightly-{ds}",
        entry,
        {"working_dir": wd} if wd else None,
        RetryPolicy(attempts=3, backoff_s=300),
    )
    if not r.ok:
        # a permanent failure must not be retried by anyone; the rest already was
        raise AirflowFailException(
            f"facepipe nightly {ds}: {r.message} (exit {r.exit_code}; permanent={r.exit_code == PERMANENT_EXIT})"
        )
    return {"submission_id": r.submission_id, "attempts": r.attempts}


def check_manifest(ds: str, **_) -> dict:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(_setting("FACEPIPE_OUTPUT"))
    with fs.open_input_stream(f"{root.rstrip('/')}/_runs/nightly-{ds}.json") as f:
        manifest = json.loads(f.read())
    return {"images": manifest.get("counts"), "run_id": manifest.get("run_id")}


with DAG(
    dag_id="facepipe_nightly",
    description="facepipe: faces, outliers and identities of one night's images",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "facepipe", "retries": 0, "execution_timeout": timedelta(hours=14)},
    tags=["facepipe"],
) as dag:
    run = PythonOperator(task_id="facepipe_run", python_callable=facepipe_run)
    check = PythonOperator(task_id="check_manifest", python_callable=check_manifest)
    run >> check
