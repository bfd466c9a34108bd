"""Processes the tests start, find and end -- only their own.

- Servers: free ports (`free_ports`), processes found by a marker only they carry (their own
  temp dir in the command line, `pids_with`) and ended by pid (`end`), never a broad stop.
- The job as a process of its own (`cli_run`) and the Ray actors and tasks *of that job*
  (`job_of`, `model_tasks`, `wait_for_batches_in_flight`), found through Ray's state API -- asked
  at the cluster's dashboard URL, never its GCS address: given a GCS address, Ray points the
  calling process's internal-KV client at that cluster for good, and when that cluster ends
  (tests/test_multinode.py) the process is terminated after 60 s without its GCS.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (held open together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pids_with(marker: str) -> list[int]:
    """PIDs of the live processes whose command line contains ``marker`` (Linux /proc)."""
    me, found = os.getpid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in cmdline:
            found.append(int(d.name))
    return found


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def own_processes(session: int, marker: str) -> list[int]:
    """The processes a server started: those of its process session ``session`` (the pid of the
    launcher started with ``start_new_session=True``), those whose command line names
    ``marker`` (its own temp dir), and every descendant of either."""
    stats = {int(d.name): st for d in Path("/proc").iterdir() if d.name.isdigit() and (st := _stat(int(d.name)))}
    own = {pid for pid, st in stats.items() if int(st[3]) == session} | set(pids_with(marker))
    own.discard(os.getpid())
    grew = True
    while grew:
        kids = {pid for pid, st in stats.items() if int(st[1]) in own and pid not in own and pid != os.getpid()}
        own |= kids
        grew = bool(kids)
    return sorted(own)


def end(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM these processes, then SIGKILL whichever is still alive after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"  # a zombie has ended


def cli_run(
    ray_cluster,
    inputs: list[str],
    out,
    run_id: str,
    dt: str,
    *extra: str,
    env: dict | None = None,
    batch_delay: float = 0.0,
    crash_at: str | None = None,
) -> subprocess.Popen:
    """``facepipe run`` as a process of its own (stderr into stdout); ``env`` adds variables.
    ``batch_delay``/``crash_at``: faults placed by tests/faulty_cli.py (the job itself unchanged)."""
    args = [
        "run",
        *inputs,
        "--output",
        str(out),
        "--run-id",
        run_id,
        "--dt",
        dt,
        "--ray-address",
        ray_cluster.address,
        *extra,
    ]
    if batch_delay or crash_at:
        faults = [f"--batch-delay={batch_delay}"] + ([f"--crash-at={crash_at}"] if crash_at else [])
        cmd = [sys.executable, str(REPO / "tests" / "faulty_cli.py"), *faults, "--", *args]
    else:
        cmd = [sys.executable, "-m", "facepipe.cli", *args]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**ray_cluster.env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    proc.state_url = ray_cluster.dashboard_url  # for the state-API helpers below
    STARTED.append(proc)
    return proc


#: Job processes started by ``cli_run`` during the current test; conftest ends the ones still
#: running when the test ends (a failed or timed-out test must not leave a job holding the
#: cluster's CPUs for the tests after it).
STARTED: list[subprocess.Popen] = []


def end_started() -> list[int]:
    """End (their whole process groups) the jobs ``cli_run`` started that still run; returns
    their pids."""
    left = [p for p in STARTED if p.poll() is None]
    for p in left:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
    STARTED.clear()
    return [p.pid for p in left]


def state_address(url: str) -> str:
    """``url`` checked to be a dashboard URL (see the module's docstring for why not a GCS address)."""
    assert url.startswith("http://"), f"ask Ray's state API at a dashboard URL, not {url!r}"
    return url


def job_of(state_url: str, driver_pid: int) -> str | None:
    """The Ray job id (hex) whose driver is the process ``driver_pid``, once it has connected.
    Every state-API call names the cluster by its dashboard URL (``state_url``): with another
    cluster on the machine, Ray would not know which one to ask."""
    from ray.util.state import list_jobs

    for j in list_jobs(address=state_address(state_url), limit=10_000):
        if j.driver_info is not None and str(j.driver_info.pid) == str(driver_pid):
            return j.job_id
    return None


def model_tasks(state_url: str, job_id: str, state: str) -> list:
    """The job's batches on its map actors (``MapWorker.submit`` tasks; not the actor's
    constructor) in one state -- ``RUNNING``: started and not yet returned; ``FAILED`` -- as Ray's
    TaskState."""
    from ray.util.state import list_tasks

    tasks = list_tasks(
        address=state_address(state_url),
        filters=[("job_id", "=", job_id), ("state", "=", state)],
        limit=10_000,
        raise_on_missing_output=False,
    )
    return [t for t in tasks if t.actor_id and "MapWorker" in (t.name or "") and t.name.endswith(".submit")]


def wait_for_batches_in_flight(p: subprocess.Popen, timeout: float = 180) -> tuple[str, list]:
    """Wait until the job run by ``p`` (from :func:`cli_run`) has a batch running on a model actor
    (Ray's state API says a map-actor task is RUNNING); returns (job id, those tasks). Fails if the
    job ends or never gets there: a fault test must hit work in progress, not an idle or finished run."""
    deadline, job = time.time() + timeout, None
    while time.time() < deadline:
        if p.poll() is not None:
            raise AssertionError(f"the run ended (exit {p.returncode}) before a batch was seen in flight")
        job = job or job_of(p.state_url, p.pid)
        if job:
            running = model_tasks(p.state_url, job, "RUNNING")
            if running:
                return job, running
        time.sleep(0.1)
    raise AssertionError(f"no batch of job {job} was seen running on a model actor in {timeout:.0f}s")
