"""Read stage: listing, WebDataset tars, Parquet columns; read failures become rows, not crashes."""

import io
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import S3_PORT

from facepipe.stages.read.sources import (
    InputError,
    ReadConfig,
    Unit,
    image_id_for,
    list_units,
    read_unit,
    read_units,
    split_units,
)
from facepipe.stages.read.tar import split_key
from facepipe.storage import fs as fsio
from testbed.s3_throttle import Throttle


def _tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_listing_classifies_units_and_skips_hidden(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"1")
    (tmp_path / "a" / "noext").write_bytes(b"2")
    (tmp_path / ".DS_Store").write_bytes(b"3")
    (tmp_path / "_SUCCESS").write_bytes(b"")
    (tmp_path / "s.tar").write_bytes(b"")
    (tmp_path / "p.parquet").write_bytes(b"")
    kinds = {u.uri.rsplit("/", 1)[1]: u.kind for u in list_units([str(tmp_path)])}
    assert kinds == {"x.jpg": "image", "noext": "image", "s.tar": "tar", "p.parquet": "parquet"}


def test_missing_input_is_a_user_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_units([str(tmp_path / "nope")])
    with pytest.raises(InputError, match="no files"):
        list_units([str(tmp_path)])


def test_webdataset_key_split():
    assert split_key("dir/abc.seg.jpg") == ("dir/abc", "seg.jpg")
    assert split_key("abc.jpg") == ("abc", "jpg")


def test_tar_yields_image_members_and_records_damage(tmp_path):
    good = tmp_path / "good.tar"
    _tar(good, [("k1.jpg", b"img1"), ("k1.json", b"{}"), ("k2.png", b"img2")])
    rows = list(read_unit(Unit("tar", str(good), 0), ReadConfig()))
    assert [r["source_uri"] for r in rows] == [f"{good}#k1.jpg", f"{good}#k2.png"]
    assert rows[0]["data"] == b"img1" and rows[0]["image_id"] == image_id_for(f"{good}#k1.jpg")

    # Cut inside a member's data, and inside a header (where tarfile itself stops silently):
    # the members before the damage are kept and the shard gets a failure row.
    data = good.read_bytes()
    for cut in (1536 + 100, 1024 + 100):
        bad = tmp_path / f"bad{cut}.tar"
        bad.write_bytes(data[:cut])
        rows = list(read_unit(Unit("tar", str(bad), 0), ReadConfig()))
        assert rows[0]["source_uri"] == f"{bad}#k1.jpg" and rows[0]["data"] == b"img1", cut
        assert rows[-1]["source_uri"] == str(bad) and "damaged" in rows[-1]["read_error"], cut
        assert rows[-1]["read_status"] == "corrupt", "damage is recorded as such, not retried every night"
        assert len(rows) == 2, cut


def test_parquet_binary_and_struct_columns(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "img": pa.array([b"x", b"y"], pa.binary())}), p)
    rows = list(read_unit(Unit("parquet", str(p), 0), ReadConfig(image_column="img", id_column="id")))
    assert [(r["source_uri"], r["data"]) for r in rows] == [(f"{p}#a", b"x"), (f"{p}#b", b"y")]

    hf = tmp_path / "hf.parquet"  # Hugging Face datasets' Image feature: struct<bytes, path>
    pq.write_table(pa.table({"image": pa.array([{"bytes": b"z", "path": "z.jpg"}])}), hf)
    rows = list(read_unit(Unit("parquet", str(hf), 0), ReadConfig()))
    assert rows[0]["source_uri"] == f"{hf}#0" and rows[0]["data"] == b"z"


def test_parquet_with_wrong_column_is_a_failure_row(tmp_path):
    p = tmp_path / "w.parquet"
    pq.write_table(pa.table({"image": [1, 2]}), p)
    rows = list(read_unit(Unit("parquet", str(p), 0), ReadConfig()))
    assert len(rows) == 1 and "expected binary" in rows[0]["read_error"]
    rows = list(read_unit(Unit("parquet", str(p), 0), ReadConfig(image_column="pixels")))
    assert "no image column 'pixels'" in rows[0]["read_error"]


def test_blocks_are_bounded_and_keep_every_row(tmp_path):
    units = []
    for i in range(5):
        (tmp_path / f"{i}.jpg").write_bytes(b"x")
        units.append(Unit("image", str(tmp_path / f"{i}.jpg"), 1))
    blocks = list(read_units(units, ReadConfig(rows_per_block=2)))
    assert [b.num_rows for b in blocks] == [2, 2, 1]
    assert [u for b in blocks for u in b.column("source_uri").to_pylist()] == [u.uri for u in units]
    assert list(read_units([], ReadConfig())) == []


def test_split_units_balances_and_keeps_everything():
    units = [Unit("image", f"u{i}", s) for i, s in enumerate([100, 90, 10, 10, 10, 5, 1])]
    groups = split_units(units, 3)
    assert sorted(u.uri for g in groups for u in g) == sorted(u.uri for u in units)
    loads = sorted(sum(u.size for u in g) for g in groups)
    assert loads[-1] == 100 and len(groups) == 3
    assert len(split_units(units[:2], 8)) == 2


def test_unit_of_a_source_uri_finds_the_tar_or_parquet_it_came_from():
    from facepipe.stages.read.sources import unit_of

    assert unit_of("s3://b/a/s-0.tar#x/y.jpg") == Unit("tar", "s3://b/a/s-0.tar", 0)
    assert unit_of("/d/part-0.parquet#key#with#hashes") == Unit("parquet", "/d/part-0.parquet", 0)
    assert unit_of("/d/odd#name.tar#m.jpg") == Unit("tar", "/d/odd#name.tar", 0)
    assert unit_of("/d/photo#1.jpg") == Unit("image", "/d/photo#1.jpg", 0)


def test_storage_failing_mid_parquet_file_is_retried_next_run_not_recorded_as_damage(seaweedfs, monkeypatch):
    # the real S3 server behind a throttle that, after the first rows, refuses every request: the
    # rest of the file is a row the run records for retry (read_error), not a damaged file (corrupt)
    seaweedfs.client.create_bucket(Bucket="midfile")
    with Throttle(S3_PORT) as t:
        monkeypatch.setenv("AWS_ENDPOINT_URL", t.url)
        monkeypatch.setenv("FACEPIPE_S3_RETRIES", "2")  # give up in 25 ms, not 51 s
        images = [os.urandom(20_000) for _ in range(2000)]
        table = pa.table({"key": [f"k{i}" for i in range(2000)], "image": images})
        pq.write_table(table, "midfile/a.parquet", filesystem=fsio.s3_filesystem(), row_group_size=100)
        rows = read_unit(Unit("parquet", "s3://midfile/a.parquet", 0), ReadConfig(id_column="key"))
        first = next(rows)
        t.bursts(on_s=3600, off_s=1, share=1.0)
        rest = list(rows)
    assert first["data"] == images[0] and first["read_error"] is None
    good, last = rest[:-1], rest[-1]
    assert [r["data"] for r in good] == images[1 : 1 + len(good)] and len(good) < 1999
    assert last["source_uri"] == f"s3://midfile/a.parquet#row{len(good) + 1}+", last["source_uri"]
    assert last["read_status"] == "read_error" and "unreadable after row" in last["read_error"], last
