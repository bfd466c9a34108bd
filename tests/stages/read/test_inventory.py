"""Input units read from an inventory file (--input-manifest) instead of a listing: the same
units a listing gives for the same files (kind, version, hidden files left out, sorted, once),
from a ``uri`` column or S3 Inventory's bucket/key/size/last_modified_date, Parquet or CSV; a
manifest without the columns it needs is one line of user error. The job over an S3 manifest
writes the same tables as the job over the listed prefix."""

import datetime as dt
from dataclasses import replace

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from facepipe.errors import UserError
from facepipe.stages.read.inventory import manifest_units
from facepipe.stages.read.sources import list_units


def _tree(root):
    (root / "a").mkdir(parents=True)
    for name in ("a/x.jpg", "a/y.tar", "b.parquet", "a/_SUCCESS", "a/.DS_Store"):
        (root / name).write_bytes(b"0123456789"[: len(name)])
    return root


def test_a_uri_manifest_gives_the_units_a_listing_gives(tmp_path):
    root = _tree(tmp_path / "in")
    listed = list_units([str(root)])
    files = [u.uri for u in listed]
    rows = {
        "uri": list(reversed(files)) + [files[0], str(root / "a/_SUCCESS")],  # any order, a duplicate, a hidden file
        "size": [u.size for u in reversed(listed)] + [listed[0].size, 9],
        "mtime_ns": [u.mtime_ns for u in reversed(listed)] + [listed[0].mtime_ns, 0],
    }
    pq.write_table(pa.table(rows), tmp_path / "units.parquet")
    assert manifest_units(str(tmp_path / "units.parquet")) == listed
    pacsv.write_csv(pa.table(rows), tmp_path / "units.csv")
    assert manifest_units(str(tmp_path / "units.csv")) == listed


def test_s3_inventory_columns_give_uris_and_versions(tmp_path):
    when = dt.datetime(2026, 11, 9, 3, 0, 1, tzinfo=dt.timezone.utc)
    inv = pa.table(
        {
            "bucket": ["photos", "photos"],
            "key": ["night/b.tar", "night/a.jpg"],
            "size": pa.array([2048, 10], pa.int64()),
            "last_modified_date": pa.array([when, when], pa.timestamp("ms", tz="UTC")),
        }
    )
    (tmp_path / "data").mkdir()
    pq.write_table(inv, tmp_path / "data" / "part-0.parquet")  # S3 Inventory writes a folder of files
    a, b = manifest_units(str(tmp_path / "data"))
    assert (a.kind, a.uri, a.size) == ("image", "s3://photos/night/a.jpg", 10)
    assert (b.kind, b.uri, b.size) == ("tar", "s3://photos/night/b.tar", 2048)
    assert a.mtime_ns == int(when.timestamp()) * 10**9


def test_a_manifest_without_file_columns_is_a_user_error(tmp_path):
    pq.write_table(pa.table({"path": ["x.jpg"]}), tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="needs 'uri'"):
        manifest_units(str(tmp_path / "bad.parquet"))
    with pytest.raises(UserError, match="cannot read input manifest"):
        manifest_units(str(tmp_path / "missing.parquet"))


@pytest.mark.slow
def test_the_job_over_an_s3_manifest_equals_the_job_over_the_listed_prefix(s3_server, ray_cluster, photos, tmp_path):
    import duckdb
    import pyarrow.dataset as pads

    from facepipe.run.job import run
    from facepipe.storage import fs as fsio
    from testbed import archive

    for b in ("inv-archive", "inv-out"):
        s3_server.create_bucket(Bucket=b)
    arch = archive.build(tmp_path / "a", photos, prefix="s3://inv-archive/night")
    archive.upload(s3_server, "inv-archive", tmp_path / "a", "night")
    listed = list_units(arch.inputs)
    pq.write_table(
        pa.table({"bucket": [u.uri.split("/")[2] for u in listed], "key": [u.uri.split("/", 3)[3] for u in listed]}),
        tmp_path / "inventory.parquet",
    )
    s3_server.put_object(Bucket="inv-out", Key="inventory.parquet", Body=(tmp_path / "inventory.parquet").read_bytes())

    def tables(out: str):
        fs = fsio.s3_filesystem()
        images = pads.dataset(f"inv-out/{out}/images", filesystem=fs, format="parquet", partitioning="hive")  # noqa: F841
        faces = pads.dataset(f"inv-out/{out}/faces", filesystem=fs, format="parquet", partitioning="hive")  # noqa: F841
        return (
            duckdb.sql("select image_id, source_uri, status, n_faces from images order by all").fetchall(),
            duckdb.sql("select face_id, image_id, face_index from faces order by all").fetchall(),
        )

    by_listing = run(archive.run_config(arch.inputs, "s3://inv-out/listed", "listed"))
    cfg = archive.run_config([], "s3://inv-out/manifest", "manifest")
    by_manifest = run(replace(cfg, read=replace(cfg.read, manifest="s3://inv-out/inventory.parquet")))
    assert by_manifest.counts.input_units == by_listing.counts.input_units == len(listed)
    assert tables("manifest") == tables("listed")
