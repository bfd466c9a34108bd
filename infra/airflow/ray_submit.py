"""Submit a facepipe job to a Ray cluster, wait for it, retry what is worth retrying.

Plain Python on Ray's Jobs SDK (``JobSubmissionClient``), no Airflow import: the DAG
(``facepipe_nightly.py``) calls :func:`run_job`, and so can any other orchestrator or a cron line::

    python infra/airflow/ray_submit.py --address http://HEAD:8265 --name nightly-2026-11-23 -- \\
        python jobs/extract.py s3://archive/2026-11-23/ --output s3://faces/out --dt 2026-11-23

Ray does not retry a submitted job; this does, by these rules:

- attempt ``k`` has the submission id ``NAME-k``. A submitter that died and runs again finds the
  attempt it had started: still running -> it waits for it; succeeded -> done, nothing resubmitted.
- the job's exit status says whether to retry: 0 done; 2 (bad flags or inputs, the job's own
  contract) fails at once; anything else (1, a lost node, a killed driver) is retried, up to
  ``attempts`` times, with exponential backoff. The job is idempotent for its ``--dt`` / run id,
  so a rerun replaces a half-finished attempt's output instead of adding to it.
- the cluster being unreachable (head restarting, network) is retried with backoff too, for up to
  ``unreachable_s`` seconds, then fails with a clear message.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("facepipe.submit")

PERMANENT_EXIT = 2  # jobs/*.py: bad flags or inputs -- the same again would fail the same way


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff_s: float = 60.0  # before attempt 2; doubled each time
    max_backoff_s: float = 900.0
    poll_s: float = 10.0
    unreachable_s: float = 600.0
    timeout_s: float = 12 * 3600.0  # one attempt


@dataclass
class JobResult:
    ok: bool
    submission_id: str
    status: str
    exit_code: int | None
    attempts: int
    message: str = ""
    history: list[dict] = field(default_factory=list)


class SubmitError(RuntimeError):
    pass


def _reachable(call, policy: RetryPolicy, what: str, sleep=time.sleep):
    """Call ``call()``; on connection errors retry with backoff for ``unreachable_s``."""
    deadline, wait = time.monotonic() + policy.unreachable_s, 1.0
    while True:
        try:
            return call()
        except (ConnectionError, OSError, TimeoutError) as e:
            cause = e
        except Exception as e:  # the SDK wraps HTTP failures in RuntimeError
            if "connect" not in str(e).lower() and "timed out" not in str(e).lower():
                raise
            cause = e
        if time.monotonic() + wait > deadline:
            raise SubmitError(
                f"Ray cluster unreachable for {policy.unreachable_s:.0f}s while {what}: {cause}"
            ) from cause
        log.warning("Ray cluster unreachable while %s (%s); retrying in %.0fs", what, cause, wait)
        sleep(wait)
        wait = min(wait * 2, 60.0)


def _wait(client, sid: str, policy: RetryPolicy, sleep=time.sleep):
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + policy.timeout_s
    while True:
        info = _reachable(lambda: client.get_job_info(sid), policy, f"polling {sid}", sleep)
        if info.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return info
        if time.monotonic() > deadline:
            _reachable(lambda: client.stop_job(sid), policy, f"stopping {sid}", sleep)
            return info
        sleep(policy.poll_s)


def run_job(
    address: str,
    name: str,
    entrypoint: str,
    runtime_env: dict | None = None,
    policy: RetryPolicy = RetryPolicy(),
    client=None,
    sleep=time.sleep,
) -> JobResult:
    """Run ``entrypoint`` on the cluster at ``address`` until it succeeds, fails permanently, or
    runs out of attempts (see the module text)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = client or _reachable(lambda: JobSubmissionClient(address), policy, f"connecting to {address}", sleep)
    history: list[dict] = []
    for attempt in range(1, policy.attempts + 1):
        sid = f"{name}-{attempt}"
        existing = _reachable(lambda sid=sid: _find(client, sid), policy, "listing jobs", sleep)
        if existing is None:
            log.info("submitting %s: %s", sid, entrypoint)
            _reachable(
                lambda sid=sid: client.submit_job(entrypoint=entrypoint, submission_id=sid, runtime_env=runtime_env),
                policy,
                f"submitting {sid}",
                sleep,
            )
            info = _wait(client, sid, policy, sleep)
        elif existing.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            info = existing  # an earlier submitter's attempt that already ended
        else:
            log.info("%s already submitted (%s): waiting for it", sid, existing.status)
            info = _wait(client, sid, policy, sleep)
        code = getattr(info, "driver_exit_code", None)
        history.append({"submission_id": sid, "status": str(info.status), "exit_code": code, "message": info.message})
        if info.status == JobStatus.SUCCEEDED:
            return JobResult(True, sid, "SUCCEEDED", code, attempt, info.message or "", history)
        if code == PERMANENT_EXIT:
            return JobResult(
                False, sid, str(info.status), code, attempt, f"permanent failure (exit {code}): {info.message}", history
            )
        if attempt < policy.attempts:
            wait = min(policy.backoff_s * 2 ** (attempt - 1), policy.max_backoff_s)
            log.warning("%s ended %s (exit %s); attempt %d in %.0fs", sid, info.status, code, attempt + 1, wait)
            sleep(wait)
    return JobResult(
        False,
        sid,
        str(info.status),
        getattr(info, "driver_exit_code", None),
        policy.attempts,
        f"failed {policy.attempts} times; last: {info.message}",
        history,
    )


def _find(client, sid: str):
    for job in client.list_jobs():
        if job.submission_id == sid:
            return job
    return None


def main(argv: list[str] | None = None) -> int:
    import json
    import shlex

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", required=True, help="Ray dashboard address, http://HEAD:8265")
    ap.add_argument(
        "--name", required=True, help="job name; attempts are NAME-1, NAME-2, ... (use the date: idempotent)"
    )
    ap.add_argument("--working-dir", default=None, help="upload this directory with the job (runtime_env working_dir)")
    ap.add_argument("--attempts", type=int, default=3)
    ap.add_argument("--backoff", type=float, default=60.0, help="seconds before the second attempt; doubled after")
    ap.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- then the command the job runs")
    a = ap.parse_args(argv)
    cmd = a.entrypoint[1:] if a.entrypoint[:1] == ["--"] else a.entrypoint
    if not cmd:
        ap.error("no entrypoint: give it after --")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        r = run_job(
            a.address,
            a.name,
            shlex.join(cmd),
            {"working_dir": a.working_dir} if a.working_dir else None,
            RetryPolicy(attempts=a.attempts, backoff_s=a.backoff),
        )
    except SubmitError as e:
        print(f"ray_submit: {e}", file=sys.stderr)
        return 1
    print(json.dumps(r.__dict__, default=str))
    return 0 if r.ok else (PERMANENT_EXIT if r.exit_code == PERMANENT_EXIT else 1)


if __name__ == "__main__":
    sys.exit(main())
