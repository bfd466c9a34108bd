"""What naming the inputs costs the driver before any image is read: listing an S3 prefix of N
keys (facepipe.stages.read.sources.list_units) against reading the same N units from an inventory file
(--input-manifest, facepipe.stages.read.inventory), each in a fresh process: wall time and the process's
peak memory.

    .venv/bin/python -m bench.speed.listing [--keys 100000] [--workdir /tmp/facepipe-bench-listing]
    .venv/bin/python -m bench.speed.listing --local --keys 100000,1000000     # files on the local disk

Starts its own S3 server (SeaweedFS on 127.0.0.1, testbed/s3server.py) with its data under
--workdir, and fills bucket ``list-N`` with N empty keys in folders of 1,000
(``night/shard-SSSS/img-NNNNNNN.jpg``) once; a later run reuses them. ``--fill metadata`` (the
default) PUTs one key and loads the rest into SeaweedFS's filer in bulk (testbed/s3_fill.py: 10^6
keys in ~4 min); ``--fill put`` PUTs every key (~300-450/s on this 2-core box: 10^6 in ~45 min).
The inventory is a Parquet file of the listed units (uri, size, mtime_ns) on the same server.
``--local`` lays the same tree of one-byte files on the local disk instead. Memory is the
measuring process's own high-water RSS (VmHWM; ``ru_maxrss`` would carry the parent's peak over
exec).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import record
from testbed import s3_fill

REPO = Path(__file__).resolve().parents[2]

MEASURE = """
import json, sys, time
from facepipe.storage import fs as fsio
from facepipe.stages.read.inventory import manifest_units
from facepipe.stages.read.sources import list_units


def peak_mib():  # this process's own high-water RSS (ru_maxrss would carry the parent's over exec)
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024

fsio.resolve(sys.argv[2])  # the filesystem (S3 client) made before the clock starts
before = peak_mib()
t0 = time.perf_counter()
units = list_units([sys.argv[2]]) if sys.argv[1] == "list" else manifest_units(sys.argv[2])
s = time.perf_counter() - t0
peak = peak_mib()
print(json.dumps({"units": len(units), "seconds": round(s, 2), "peak_rss_mib": round(peak),
                  "grew_mib": round(peak - before)}))
"""


def keys(n: int) -> list[str]:
    return [f"night/shard-{i // 1000:04d}/img-{i:07d}.jpg" for i in range(n)]


def fill(server, bucket: str, n: int, how: str, workdir: Path) -> float:
    """N empty keys (once: a ``_complete`` marker says the bucket is full); returns seconds.
    ``metadata``: one PUT, then the filer's entries loaded in bulk (testbed/s3_fill.py; ~4 min for
    10^6). ``put``: a PUT per key through pyarrow's S3 client (C++, the GIL released) from 32
    threads (~300-450 keys/s here)."""
    from facepipe.storage import fs as fsio

    client = server.client
    try:
        client.head_object(Bucket=bucket, Key="_complete")
        return 0.0
    except Exception:
        pass
    t0 = time.perf_counter()
    if how == "metadata":
        s3_fill.fill(client, server.shell, bucket, keys(n), workdir)
    else:
        try:
            client.create_bucket(Bucket=bucket)
        except Exception:
            pass
        s3 = fsio.s3_filesystem()

        def put(key: str) -> None:
            with s3.open_output_stream(f"{bucket}/{key}"):
                pass

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(put, keys(n), chunksize=256))
    client.put_object(Bucket=bucket, Key="_complete", Body=b"")
    return time.perf_counter() - t0


def local(root: Path, sizes: list[int], env: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    print(f"machine: {os.cpu_count()} CPUs; local disk")
    for n in sizes:
        tree = root / f"local-{n}" / "night"
        if not (root / f"local-{n}" / "_complete").exists():
            t0 = time.perf_counter()
            for i in range(n):
                d = tree / f"shard-{i // 1000:04d}"
                if i % 1000 == 0:
                    d.mkdir(parents=True, exist_ok=True)
                (d / f"img-{i:07d}.jpg").write_bytes(b"x")
            (root / f"local-{n}" / "_complete").write_bytes(b"")
            print(f"{n} files written in {time.perf_counter() - t0:.0f}s")
        print(f"list {tree}: {measure('list', str(tree), env)}")
        uris = [str(tree / f"shard-{i // 1000:04d}" / f"img-{i:07d}.jpg") for i in range(n)]
        inventory = root / f"local-inventory-{n}.parquet"
        pq.write_table(pa.table({"uri": uris, "size": pa.array([1] * n, pa.int64())}), inventory)
        print(
            f"--input-manifest (Parquet of {n} units, {inventory.stat().st_size >> 10} KiB): "
            f"{measure('manifest', str(inventory), env)}"
        )


def measure(kind: str, uri: str, env: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, kind, uri], env=env, capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", default="100000")
    ap.add_argument("--local", action="store_true", help="files on the local disk, not keys on S3")
    ap.add_argument("--workdir", default="/tmp/facepipe-bench-listing")
    ap.add_argument("--fill", choices=["metadata", "put"], default="metadata", help="how the keys are made on S3")
    a = ap.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from testbed.procs import free_ports
    from testbed.s3server import SeaweedFS, s3_env

    root = Path(a.workdir)
    root.mkdir(parents=True, exist_ok=True)
    port_file = root / "port"
    port = int(port_file.read_text()) if port_file.exists() else free_ports(1)[0]  # the same port: SeaweedFS keeps it
    port_file.write_text(str(port))
    env = {**os.environ, **s3_env(port)}
    if a.local:
        return local(root, [int(k) for k in a.keys.split(",")], env)
    server = SeaweedFS(root, port, env)
    server.start()
    try:
        print(f"machine: {os.cpu_count()} CPUs; S3: SeaweedFS on 127.0.0.1 (same machine: no network latency)")
        for n in [int(k) for k in a.keys.split(",")]:
            bucket = f"list-{n}"
            os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
            filled = fill(server, bucket, n, a.fill, root)
            if filled:
                print(f"{n} keys made ({a.fill}) in {filled:.0f}s ({n / filled:.0f}/s)")
            listed = measure("list", f"s3://{bucket}/night", env)
            print(f"list s3://{bucket}/night: {listed}")
            record.numbers(**{f"s3_{n}_keys": {"fill_s": filled, "list": listed}})
            inventory = root / f"inventory-{n}.parquet"
            if not inventory.exists():
                from facepipe.stages.read.sources import list_units

                units = list_units([f"s3://{bucket}/night"])
                table = pa.table(
                    {
                        "uri": [u.uri for u in units],
                        "size": [u.size for u in units],
                        "mtime_ns": pa.array([u.mtime_ns for u in units], pa.int64()),
                    }
                )
                pq.write_table(table, inventory)
            server.client.put_object(Bucket=bucket, Key="_inventory/units.parquet", Body=inventory.read_bytes())
            from_file = measure("manifest", f"s3://{bucket}/_inventory/units.parquet", env)
            print(f"--input-manifest (Parquet of {n} units, {inventory.stat().st_size >> 10} KiB): {from_file}")
            record.numbers(**{f"s3_{n}_keys_manifest": from_file})
    finally:
        server.stop()


if __name__ == "__main__":
    record.run(main, "bench.speed.listing")
