"""Submit a facepipe job to a Ray cluster, wait for it, retry what is worth retrying.

Plain Python on Ray's Jobs SDK (``JobSubmissionClient``; needs ``ray[default]`` at the cluster's
version, nothing of facepipe): the DAG (``facepipe_nightly.py``) calls :func:`run_job`, and so
can any other orchestrator or a cron line::

    python infra/airflow/ray_submit.py --address http://HEAD:8265 --name facepipe-nightly-2026-11-23 \\
        --module facepipe.jobs.nightly -- s3://archive/incoming/ --output s3://faces/out --dt 2026-11-23

Ray does not retry a submitted job; this does, by these rules:

- attempts are ``NAME-1``, ``NAME-2``, ... across every run of the submitter. A run first looks for
  attempts of NAME still pending or running (a submitter that was killed and started again, an
  Airflow worker lost): it waits for the newest of them instead of starting a second copy. Then
  every attempt it starts gets the next free number, so a rerun of a night (Airflow clear, a
  manual trigger) always runs the job again, whatever earlier attempts ended with.
- the job's exit status says whether to retry: 0 done; 2 (bad flags or inputs, the job's own
  contract) fails at once; anything else (1, 3 storage lost, a lost node, a killed driver) is
  retried, up to ``attempts`` attempts in this run, with exponential backoff. The job is
  idempotent for its ``--dt`` / run id, so a rerun replaces a half-finished attempt's output.
- an attempt past ``timeout_s`` is stopped, and the next one starts only once Ray says it ended.
  The whole run takes at most :meth:`RetryPolicy.budget_s`; give the orchestrator's task a limit
  above it (the DAG does).
- the submitter itself stopped (Airflow's ``execution_timeout``, a task marked failed: SIGTERM,
  Ctrl-C) stops the attempt it waits for and waits for it to end before it exits.
- the cluster being unreachable (head restarting, network) is retried with backoff too, for up to
  ``unreachable_s`` seconds at a time, then fails with a clear message.

The entrypoint runs the job module with the cluster's own Python (:func:`module_entrypoint`).
Ray's token authentication (Ray >= 2.52: on when the cluster was started with
``RAY_AUTH_MODE=token``): give the submitter the cluster's token in ``RAY_AUTH_TOKEN`` or a file
named by ``RAY_AUTH_TOKEN_PATH`` (default ``~/.ray/auth_token``). Ray's Jobs SDK sends a token
only in token mode, which Ray's CLI turns on when it finds one and the SDK does not:
:func:`token_mode_if_token` does, so the token alone is enough (``tests/infra/test_airflow.py``).
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("facepipe.submit")

PERMANENT_EXIT = 2  # facepipe's jobs: bad flags or inputs -- the same again would fail the same way
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")

#: The entrypoint is run by ``/bin/sh`` on the head node, a child of Ray's job supervisor, which
#: runs on the cluster's Python. A bare ``python`` is whatever came first on PATH where ``ray
#: start`` ran -- often another interpreter, without facepipe. This finds the supervisor's own
#: environment instead: the virtualenv it runs in (a runtime env's pip list, an activated venv:
#: $VIRTUAL_ENV), else the environment its Ray was imported from (read from /proc/PID/maps: a venv
#: whose `ray` was started without activating it, a conda env, the system Python), else
#: ``python`` where there is no /proc.
CLUSTER_PYTHON = (
    "py=; p=/proc/$PPID; "
    'if [ -n "$VIRTUAL_ENV" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then py="$VIRTUAL_ENV/bin/python"; '
    'elif [ -r "$p/maps" ]; then env=$(grep -o "/.*/site-packages/ray/_raylet[^/]*\\.so" "$p/maps" | head -n1); '
    'env="${env%/lib/python*/site-packages/ray/*}"; '
    'if [ -n "$env" ] && [ -f "$env/pyvenv.cfg" ] && [ -x "$env/bin/python" ]; then py="$env/bin/python"; '
    'else py=$(readlink "$p/exe"); fi; fi; '
)


def module_entrypoint(module: str, args: list[str], python: str | None = None) -> str:
    """The shell command that runs ``python -m MODULE ARGS`` on the cluster's Python (or on
    ``python``, an interpreter's path, when given), every argument quoted."""
    command = " ".join(["-m", shlex.quote(module), *map(shlex.quote, args)])
    if python:
        return f"exec {shlex.quote(python)} {command}"
    return f'{{ {CLUSTER_PYTHON}exec "${{py:-python}}" {command}; }}'


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff_s: float = 60.0  # before attempt 2; doubled each time
    max_backoff_s: float = 900.0
    poll_s: float = 10.0
    unreachable_s: float = 600.0  # one unreachable spell
    timeout_s: float = 4 * 3600.0  # one attempt
    stop_wait_s: float = 300.0  # after stopping an attempt, how long to wait for it to end

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` (1-based) failed."""
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)

    def budget_s(self) -> float:
        """The longest :func:`run_job` can take: every attempt to its timeout and its stop, every
        backoff, and one unreachable spell per attempt."""
        backoffs = sum(self.backoff(a) for a in range(1, self.attempts))
        return self.attempts * (self.timeout_s + self.stop_wait_s + self.unreachable_s) + backoffs


@dataclass
class JobResult:
    ok: bool
    submission_id: str
    status: str
    exit_code: int | None
    attempts: int
    message: str = ""
    history: list[dict] = field(default_factory=list)
    started_ms: int | None = None  # when Ray started the last attempt (ms since the epoch, the head's clock)


class SubmitError(RuntimeError):
    pass


class Terminated(BaseException):
    """The submitter got SIGTERM (an orchestrator killing its task)."""


def token_mode_if_token() -> None:
    """``RAY_AUTH_MODE=token`` for this process when it is unset and a token is at hand (in
    ``RAY_AUTH_TOKEN``, a file ``RAY_AUTH_TOKEN_PATH`` names, or ``~/.ray/auth_token``), as
    ``ray job submit`` does: without it the Jobs SDK sends no token and a cluster with token
    authentication refuses every request."""
    import os
    from pathlib import Path

    if "RAY_AUTH_MODE" in os.environ:
        return
    env = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if env or (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray" in sys.modules:  # Ray read its config at import: read it again (as Ray's CLI does)
            from ray._raylet import Config

            Config.initialize("")


def _status(info) -> str:
    return getattr(info.status, "value", str(info.status))


def _reachable(call, policy: RetryPolicy, what: str, sleep=time.sleep):
    """Call ``call()``; on connection errors retry with backoff for ``unreachable_s``."""
    deadline, wait = time.monotonic() + policy.unreachable_s, 1.0
    while True:
        try:
            return call()
        except (ConnectionError, OSError, TimeoutError) as e:
            cause = e
        except Exception as e:  # the SDK wraps HTTP failures in RuntimeError
            text = str(e)
            if "authentication token" in text or "Unauthorized" in text:
                raise SubmitError(
                    f"the Ray cluster refused the request while {what}: {text.strip().splitlines()[-1]} -- it runs "
                    "with token authentication; give the submitter its token in RAY_AUTH_TOKEN or a file named by "
                    "RAY_AUTH_TOKEN_PATH"
                ) from None
            if "connect" not in text.lower() and "timed out" not in text.lower():
                raise
            cause = e
        if time.monotonic() + wait > deadline:
            raise SubmitError(
                f"Ray cluster unreachable for {policy.unreachable_s:.0f}s while {what}: {cause}"
            ) from cause
        log.warning("Ray cluster unreachable while %s (%s); retrying in %.0fs", what, cause, wait)
        sleep(wait)
        wait = min(wait * 2, 60.0)


def _until_ended(client, sid: str, policy: RetryPolicy, within_s: float, poll_s: float, sleep=time.sleep):
    """Poll ``sid`` until it ends (its info) or ``within_s`` passes (None)."""
    deadline = time.monotonic() + within_s
    while True:
        info = _reachable(lambda: client.get_job_info(sid), policy, f"polling {sid}", sleep)
        if _status(info) in ENDED:
            return info
        if time.monotonic() > deadline:
            return None
        sleep(poll_s)


def _wait(client, sid: str, policy: RetryPolicy, sleep=time.sleep):
    """Poll ``sid`` until it ends; past ``timeout_s`` stop it and wait for it to end."""
    info = _until_ended(client, sid, policy, policy.timeout_s, policy.poll_s, sleep)
    if info is None:
        log.warning("%s still running after %.0fs: stopping it", sid, policy.timeout_s)
        info = _stop(client, sid, policy, sleep)
    return info


def _stop(client, sid: str, policy: RetryPolicy, sleep=time.sleep):
    """Stop ``sid`` and wait until Ray says it ended; a job that outlives ``stop_wait_s`` is an
    error (no new attempt may start beside it)."""
    _reachable(lambda: client.stop_job(sid), policy, f"stopping {sid}", sleep)
    info = _until_ended(client, sid, policy, policy.stop_wait_s, min(policy.poll_s, 1.0), sleep)
    if info is None:
        raise SubmitError(f"{sid} was stopped but has not ended after {policy.stop_wait_s:.0f}s")
    return info


@contextmanager
def _sigterm_raises():
    """Inside: SIGTERM raises :class:`Terminated` in the main thread (after any handler that was
    there, such as Airflow's, which calls the task's on_kill), so the attempt is stopped on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        if callable(previous):
            previous(signum, frame)
        raise Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _attempts(client, name: str) -> dict[int, object]:
    """This job name's attempts on the cluster, by number."""
    pattern = re.compile(rf"{re.escape(name)}-(\d+)")
    found = {}
    for job in client.list_jobs():
        m = pattern.fullmatch(job.submission_id or "")
        if m:
            found[int(m.group(1))] = job
    return found


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
    token_mode_if_token()
    from ray.job_submission import JobSubmissionClient

    client = client or _reachable(lambda: JobSubmissionClient(address), policy, f"connecting to {address}", sleep)
    history: list[dict] = []
    earlier = _reachable(lambda: _attempts(client, name), policy, "listing jobs", sleep)
    live = sorted(k for k, job in earlier.items() if _status(job) not in ENDED)
    for k in live[:-1]:
        log.warning("%s-%d is still %s beside a newer attempt", name, k, _status(earlier[k]))
    number = max(earlier, default=0)
    resume = live[-1] if live else None
    for attempt in range(1, policy.attempts + 1):
        if resume is not None:
            sid = f"{name}-{resume}"
            log.info("%s already submitted (%s): waiting for it", sid, _status(earlier[resume]))
            resume = None
        else:
            number += 1
            sid = f"{name}-{number}"
            log.info("submitting %s: %s", sid, entrypoint)
            _reachable(
                lambda sid=sid: client.submit_job(entrypoint=entrypoint, submission_id=sid, runtime_env=runtime_env),
                policy,
                f"submitting {sid}",
                sleep,
            )
        try:
            with _sigterm_raises():
                info = _wait(client, sid, policy, sleep)
        except BaseException as e:  # noqa: BLE001 -- the task's own timeout, SIGTERM, Ctrl-C: stop the job, then go
            if not isinstance(e, SubmitError):
                log.warning("submitter interrupted (%s): stopping %s", type(e).__name__, sid)
                _stop(client, sid, policy, sleep)
            raise
        code = getattr(info, "driver_exit_code", None)
        history.append({"submission_id": sid, "status": _status(info), "exit_code": code, "message": info.message})
        if _status(info) == "SUCCEEDED":
            return JobResult(True, sid, "SUCCEEDED", code, attempt, info.message or "", history, info.start_time)
        if code == PERMANENT_EXIT:
            msg = f"permanent failure (exit {code}): {info.message}"
            return JobResult(False, sid, _status(info), code, attempt, msg, history)
        if attempt < policy.attempts:
            wait = policy.backoff(attempt)
            log.warning("%s ended %s (exit %s); next attempt in %.0fs", sid, _status(info), code, wait)
            sleep(wait)
    msg = f"failed {policy.attempts} times; last: {info.message}"
    return JobResult(False, sid, _status(info), code, policy.attempts, msg, history)


def main(argv: list[str] | None = None) -> int:
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", required=True, help="Ray dashboard address, http://HEAD:8265")
    ap.add_argument("--name", required=True, help="job name; attempts are NAME-1, NAME-2, ... (put the date in it)")
    ap.add_argument("--module", help="run `python -m MODULE ARGS` on the cluster's Python (ARGS after --)")
    ap.add_argument("--python", help="with --module: this interpreter on the head node instead of the cluster's own")
    ap.add_argument("--working-dir", default=None, help="upload this directory with the job (runtime_env working_dir)")
    ap.add_argument("--attempts", type=int, default=3)
    ap.add_argument("--backoff", type=float, default=60.0, help="seconds before the second attempt; doubled after")
    ap.add_argument(
        "--timeout", type=float, default=4 * 3600.0, help="seconds one attempt may run before it is stopped"
    )
    ap.add_argument(
        "entrypoint", nargs=argparse.REMAINDER, help="-- then the command the job runs (or --module's args)"
    )
    a = ap.parse_args(argv)
    cmd = a.entrypoint[1:] if a.entrypoint[:1] == ["--"] else a.entrypoint
    if not cmd and not a.module:
        ap.error("no entrypoint: give --module, or the command after --")
    entrypoint = module_entrypoint(a.module, cmd, a.python) if a.module else shlex.join(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    policy = RetryPolicy(attempts=a.attempts, backoff_s=a.backoff, timeout_s=a.timeout)
    try:
        r = run_job(a.address, a.name, entrypoint, {"working_dir": a.working_dir} if a.working_dir else None, policy)
    except SubmitError as e:
        print(f"ray_submit: {e}", file=sys.stderr)
        return 1
    print(json.dumps(r.__dict__, default=str))
    return 0 if r.ok else (PERMANENT_EXIT if r.exit_code == PERMANENT_EXIT else 1)


if __name__ == "__main__":
    sys.exit(main())
