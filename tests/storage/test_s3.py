"""The job reads a Parquet archive, an image prefix and a tar shard from a real S3 server
(SeaweedFS on 127.0.0.1) and writes its output back to it."""

import duckdb
import pyarrow.dataset as pads
import pytest

from facepipe.run.job import run
from facepipe.storage import fs as fsio
from testbed import archive

pytestmark = pytest.mark.slow


def test_job_reads_and_writes_s3(s3_server, ray_cluster, photos, tmp_path):
    s3_server.create_bucket(Bucket="archive")
    s3_server.create_bucket(Bucket="faces")
    arch = archive.build(tmp_path / "a", photos, prefix="s3://archive/night")
    archive.upload(s3_server, "archive", tmp_path / "a", "night")

    m = run(archive.run_config(arch.inputs, "s3://faces/out", "s3run"))
    assert m.counts.images == len(arch.expected_status)

    fs = fsio.s3_filesystem()
    images = pads.dataset("faces/out/images", filesystem=fs, format="parquet", partitioning="hive").to_table()
    faces = pads.dataset("faces/out/faces", filesystem=fs, format="parquet", partitioning="hive").to_table()  # noqa: F841 -- DuckDB reads it by name
    got = dict(zip(images.column("source_uri").to_pylist(), images.column("status").to_pylist()))
    assert got == arch.expected_status
    counts = dict(zip(images.column("source_uri").to_pylist(), images.column("n_faces").to_pylist()))
    assert {k: counts[k] for k in arch.expected_faces} == arch.expected_faces
    # DuckDB cannot fetch its httpfs extension offline: hand it the Arrow dataset over S3.
    assert duckdb.sql("select count(*) from faces").fetchall()[0][0] == m.counts.faces
    keys = [o["Key"] for o in s3_server.list_objects_v2(Bucket="faces", Prefix="out/")["Contents"]]
    assert "out/_runs/s3run.json" in keys
    assert not [k for k in keys if "/_staging/" in k and not k.endswith("/")], "staged files left behind"
    # search by face over the S3 output, the query photo itself on S3 too
    from facepipe.tools.search import search

    hits = search("s3://faces/out", ["s3://archive/night/images/grace_hopper.jpg"], k=2)
    assert hits and hits[0].distance < 0.1 and hits[0].source_uri == "s3://archive/night/images/grace_hopper.jpg"
    assert hits[0].query == "s3://archive/night/images/grace_hopper.jpg"
