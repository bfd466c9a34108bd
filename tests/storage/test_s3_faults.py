"""Storage outages with a real S3 server (SeaweedFS on 127.0.0.1) and the job as a real process.

- The server stopped mid-run for a few seconds and started again: the S3 client's backoff
  (facepipe.storage.fs) rides it out -- the run succeeds, nothing is left to retry, and its tables equal
  a clean run's.
- ``503 SlowDown`` to half of all requests, the whole run long (S3 throttling a prefix:
  ``testbed.s3_throttle``, a proxy in front of the real server): the client's backoff rides it out
  on the driver and on the cluster's workers alike, small reads and writes included
  (facepipe.storage.s3_reads) -- the run succeeds with the tables of a clean run. (Bursts of it,
  1.5 s on and 1.5 s off, failed a run in CI once: a small GET whose error answer overflowed.)
- Storage that stays down: the run fails with a one-line message (exit 3, a JSON summary saying
  so) instead of a traceback, and the output keeps its previous state, readable once the storage
  is back; the same command then succeeds.
"""

import json
import time

import duckdb
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest
from conftest import S3_PORT, ray_head

from facepipe.storage import fs as fsio
from testbed import archive
from testbed.procs import cli_run, wait_for_batches_in_flight
from testbed.s3_throttle import Throttle

pytestmark = pytest.mark.slow

ARCHIVE, OUT = "outage-archive", "outage-out"


def _run(ray_cluster, inputs, out, run_id, *extra, env=None, **faults):
    return cli_run(
        ray_cluster,
        inputs,
        out,
        run_id,
        "2026-11-07",
        "--image-column",
        "image",
        "--id-column",
        "key",
        "--no-score",
        "--summary-json",
        "-",
        *extra,
        env=env,
        **faults,
    )


def _tables(out: str):
    """(images, faces, run ids) of an s3:// output, read through pyarrow and queried by DuckDB."""
    fs = fsio.s3_filesystem()
    root = out[len("s3://") :]
    images = pads.dataset(f"{root}/images", filesystem=fs, format="parquet", partitioning="hive").to_table()  # noqa: F841
    faces = pads.dataset(f"{root}/faces", filesystem=fs, format="parquet", partitioning="hive").to_table()  # noqa: F841
    runs = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(f"{root}/_runs")))
    return (
        duckdb.sql("select image_id, status, n_faces from images order by all").fetchall(),
        duckdb.sql("select face_id, image_id, face_index from faces order by all").fetchall(),
        runs,
    )


def _read_errors(out: str) -> list:
    """(source_uri, error) of the images a run could not read or decode."""
    fs = fsio.s3_filesystem()
    root = out[len("s3://") :]
    images = pads.dataset(f"{root}/images", filesystem=fs, format="parquet", partitioning="hive").to_table()  # noqa: F841
    return duckdb.sql("select source_uri, error from images where error is not null").fetchall()


def _summary(log: str) -> dict:
    return json.loads(log.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def clean(seaweedfs, ray_cluster, photos, tmp_path_factory):
    c = seaweedfs.client
    for b in (ARCHIVE, OUT):
        c.create_bucket(Bucket=b)
    root = tmp_path_factory.mktemp("outage")
    arch = archive.build(root, photos, prefix=f"s3://{ARCHIVE}/night")
    archive.upload(c, ARCHIVE, root, "night")
    p = _run(ray_cluster, arch.inputs, f"s3://{OUT}/clean", "clean")
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]
    return arch, _tables(f"s3://{OUT}/clean")


def test_s3_down_for_seconds_mid_run_is_retried_and_loses_nothing(seaweedfs, ray_cluster, clean):
    arch, (images, faces, _) = clean
    out = f"s3://{OUT}/outage"
    p = _run(ray_cluster, arch.inputs, out, "outage", batch_delay=1.0)  # batches last long enough to be hit
    wait_for_batches_in_flight(p)  # mid-run: a model actor holds a batch, the rest is still to read and write
    seaweedfs.stop()
    try:
        time.sleep(4)
        assert p.poll() is None, "the run died during the outage instead of retrying"
    finally:
        seaweedfs.start()
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]
    assert _summary(log)["counts"]["units_to_retry"] == []
    got_images, got_faces, runs = _tables(out)
    assert (got_images, got_faces) == (images, faces)
    assert runs == ["outage.json"]


def test_s3_throttling_the_whole_run_is_ridden_out_and_loses_nothing(seaweedfs, clean):
    arch, (images, faces, _) = clean
    out = f"s3://{OUT}/throttled"
    with Throttle(S3_PORT) as s3, ray_head(AWS_ENDPOINT_URL=s3.url) as head:  # driver and workers throttled
        s3.bursts(on_s=600, off_s=0.5, share=0.5)  # half of all requests refused, the whole run long
        p = _run(head, arch.inputs, out, "throttled", env={"AWS_ENDPOINT_URL": s3.url})
        log, _ = p.communicate(timeout=600)
        s3.calm()
    assert p.returncode == 0, log[-3000:]
    assert s3.throttled >= 20, (s3.throttled, s3.passed)  # the bursts did hit the run
    assert _summary(log)["counts"]["units_to_retry"] == [], _read_errors(out)
    got_images, got_faces, runs = _tables(out)
    assert (got_images, got_faces) == (images, faces)
    assert runs == ["throttled.json"]


def test_s3_down_for_good_fails_clearly_and_keeps_the_previous_state(seaweedfs, ray_cluster, clean):
    arch, before = clean
    out = f"s3://{OUT}/clean"
    seaweedfs.stop()
    try:
        t = time.time()
        p = _run(
            ray_cluster, arch.inputs, out, "night2", env={"FACEPIPE_S3_RETRIES": "4"}
        )  # 0.4 s of backoff, not 51 s
        log, _ = p.communicate(timeout=600)
        took = time.time() - t
    finally:
        seaweedfs.start()
    assert p.returncode == 3, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    line = next(ln for ln in log.splitlines() if "storage error:" in ln)
    assert line.startswith("facepipe run: storage error:") and "run the same command again" in line
    s = _summary(log)
    assert s["status"] == "failed" and s["error"] == "storage" and s["run_id"] == "night2"
    assert took < 300
    assert _tables(out) == before  # nothing of the failed run is visible; the previous run is intact
    again = _run(ray_cluster, arch.inputs, out, "night2")
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0, log[-3000:]
    images, faces, runs = _tables(out)
    assert (images, faces) == before[:2] and runs == ["clean.json", "night2.json"]
