"""Helpers for tests that run the job as a separate process and hurt it: start `facepipe run`
on the test Ray cluster, find the model actors' worker PIDs (Ray's state API)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def cli_run(ray_cluster, inputs: list[str], out, run_id: str, dt: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """``facepipe run`` as a process of its own (stderr into stdout); ``env`` adds variables."""
    cmd = [sys.executable, "-m", "facepipe.cli", "run", *inputs, "--output", str(out), "--run-id", run_id, "--dt", dt,
           "--ray-address", ray_cluster.address, *extra]
    return subprocess.Popen(cmd, cwd=REPO, env={**ray_cluster.env, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def model_actor_pids() -> list[int]:
    """PIDs of the live Ray Data actors (the detect/align/embed pool)."""
    from ray.util.state import list_actors

    return [a.pid for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000) if "MapWorker" in (a.class_name or "") and a.pid]
