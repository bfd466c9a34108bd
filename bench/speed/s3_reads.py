"""What ``facepipe.storage.s3_reads`` costs and what it saves: pyarrow's native S3 filesystem (as
facepipe made it before: the SDK's default retries, writes as multipart uploads) against
facepipe's (no GET under 8 KiB, small objects as one PutObject), on a real S3 server.

    .venv/bin/python -m bench.speed.s3_reads [--images 2000] [--tries 20]

Speed, unthrottled: reading a Parquet archive of ``--images`` random 60 KB "images" (row groups of
100) a batch at a time, as the read stage does, and the same file whole. Throttled (``testbed/
s3_throttle.py``: ``503 SlowDown`` to half of all requests): of ``--tries`` reads of one small
column of a 300 KB table file, reads of a 60-byte object, and writes of a 100-byte object (each
kind stopped after 60 s), how many failed, and the mean seconds an operation took -- pyarrow's
calls on each filesystem, no retry of facepipe's above them. Starts its own SeaweedFS on
127.0.0.1 (same machine: no network latency).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bench import record
from facepipe.storage import fs as fsio
from testbed.procs import free_ports
from testbed.s3_throttle import Throttle
from testbed.s3server import SeaweedFS, s3_env

BUCKET = "bench-s3-reads"


def native(endpoint: str) -> pafs.S3FileSystem:
    host = endpoint.split("://", 1)[1]
    retry = pafs.AwsDefaultS3RetryStrategy(max_attempts=fsio.S3_RETRY_ATTEMPTS)
    return pafs.S3FileSystem(
        region="us-east-1", endpoint_override=host, scheme="http", force_virtual_addressing=False, retry_strategy=retry
    )


def speed(fs: pafs.FileSystem, path: str, mb: float) -> dict:
    t0 = time.perf_counter()
    rows = sum(b.num_rows for b in pq.ParquetFile(fs.open_input_file(path)).iter_batches(batch_size=64))
    batches = time.perf_counter() - t0
    t0 = time.perf_counter()
    fsio.read_bytes(fs, path)
    whole = time.perf_counter() - t0
    return {"rows": rows, "batches_MBps": round(mb / batches), "whole_MBps": round(mb / whole)}


def _put(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(data)


def failures(fs: pafs.FileSystem, tries: int, budget_s: float = 60) -> dict:
    """Per operation: (failed, tried, mean seconds); each stops after ``budget_s``."""

    def count(fn) -> tuple[int, int, float]:
        bad, t0, i = 0, time.perf_counter(), 0
        while i < tries and time.perf_counter() - t0 < budget_s:
            try:
                fn(i)
            except OSError:
                bad += 1
            i += 1
        return bad, i, round((time.perf_counter() - t0) / i, 2)

    return {
        "small_column_read": count(lambda i: pq.read_table(f"{BUCKET}/table.parquet", filesystem=fs, columns=["id"])),
        "tiny_object_read": count(lambda i: fs.open_input_stream(f"{BUCKET}/tiny.json").readall()),
        "small_object_write": count(lambda i: _put(fs, f"{BUCKET}/w/{id(fs)}-{i}.json", b"{}" * 50)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--tries", type=int, default=20)
    a = ap.parse_args()
    port = free_ports(1)[0]
    env = s3_env(port)
    os.environ.update(env)
    server = SeaweedFS(Path(tempfile.mkdtemp(prefix="bench-s3-reads-")), port, env)
    server.start()
    try:
        server.client.create_bucket(Bucket=BUCKET)
        ours = fsio.s3_filesystem()
        images = pa.table(
            {"key": [f"k{i}" for i in range(a.images)], "image": [os.urandom(60_000) for _ in range(a.images)]}
        )
        pq.write_table(images, f"{BUCKET}/archive.parquet", filesystem=ours, row_group_size=100)
        table = pa.table({"id": [1, 2, 3], "blob": [os.urandom(100_000) for _ in range(3)]})
        pq.write_table(table, f"{BUCKET}/table.parquet", filesystem=ours)
        fsio.write_bytes(ours, f"{BUCKET}/tiny.json", b"{}" * 30)
        mb = a.images * 60_000 / 1e6
        print(f"machine: {os.cpu_count()} CPUs; S3: SeaweedFS on 127.0.0.1; archive {mb:.0f} MB")
        for name, fs in (("pyarrow native", native(env["AWS_ENDPOINT_URL"])), ("facepipe", ours)) * 2:
            s = speed(fs, f"{BUCKET}/archive.parquet", mb)
            print(f"{name:15s} unthrottled: {s}")
            record.numbers(**{f"{name.split()[-1]}_speed": s})
        with Throttle(port) as t:
            os.environ["AWS_ENDPOINT_URL"] = t.url
            for name, fs in (("pyarrow native", native(t.url)), ("facepipe", fsio.s3_filesystem())):
                t.bursts(on_s=3600, off_s=1, share=0.5)
                f = failures(fs, a.tries)
                t.calm()
                print(f"{name:15s} half of all requests throttled, failed: {f}")
                record.numbers(**{f"{name.split()[-1]}_throttled_failures": f})
    finally:
        server.stop()


if __name__ == "__main__":
    record.run(main, "bench.speed.s3_reads")
