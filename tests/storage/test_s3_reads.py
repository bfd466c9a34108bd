"""Reads and small writes that survive S3 throttling (``facepipe.storage.s3_reads``), against the
real S3 server (SeaweedFS on 127.0.0.1) behind ``testbed.s3_throttle``: half of all requests
answered ``503 SlowDown`` for as long as each test runs.

- A GET smaller than S3's error document (one small column of a table file) overflowed pyarrow's
  buffer and failed without a retry; the filesystem never issues one, so such reads succeed.
- An object smaller than an error document is read whole all the same (the overflow retried).
- Small objects are written with one PutObject, which the SDK retries (a multipart upload's
  completion could not get through sustained throttling).
- The filesystem pickled (as Ray ships it) keeps its retry strategy.
- Short reads return exactly the bytes asked for (the window logic, on a local file).
"""

from __future__ import annotations

import os
import pickle
import random

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from conftest import S3_PORT

from facepipe.storage import fs as fsio
from facepipe.storage import s3_reads
from testbed.s3_throttle import Throttle

BUCKET = "throttled-reads"


@pytest.fixture(scope="module")
def throttled(seaweedfs):
    """(filesystem through the throttle, throttle): a table file of 300 KB whose ``id`` column is a
    few bytes, and an object of 60 bytes; then half of all requests refused."""
    seaweedfs.client.create_bucket(Bucket=BUCKET)
    with Throttle(S3_PORT) as t, pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", t.url)
        fs = fsio.s3_filesystem()
        table = pa.table({"id": [1, 2, 3], "blob": [os.urandom(100_000) for _ in range(3)]})
        pq.write_table(table, f"{BUCKET}/t/part-0.parquet", filesystem=fs)
        fsio.write_bytes(fs, f"{BUCKET}/tiny.json", b'{"holder": "x"}' * 4)
        t.bursts(on_s=3600, off_s=1, share=0.5)
        yield fs, t
        t.calm()


def _small_column_reads(fs) -> list:
    path = f"{BUCKET}/t/part-0.parquet"
    return [
        pq.read_table(path, filesystem=fs, columns=["id"]).column("id").to_pylist(),
        pads.dataset(f"{BUCKET}/t", filesystem=fs, format="parquet").to_table(columns=["id"]).column("id").to_pylist(),
        [v for b in pq.ParquetFile(path, filesystem=fs).iter_batches(columns=["id"]) for v in b.column(0).to_pylist()],
    ]


def test_one_small_column_of_a_table_file_is_read_under_throttling(throttled):
    fs, t = throttled
    before = t.throttled
    for _ in range(5):
        assert _small_column_reads(fs) == [[1, 2, 3]] * 3
    assert t.throttled - before >= 10, "the throttle did not refuse any of these reads"


def test_an_object_smaller_than_an_error_document_is_read_under_throttling(throttled):
    fs, _ = throttled
    for _ in range(10):
        assert fsio.read_bytes(fs, f"{BUCKET}/tiny.json") == b'{"holder": "x"}' * 4


def test_small_objects_are_written_under_sustained_throttling(throttled):
    fs, _ = throttled
    for i in range(10):
        fsio.write_bytes(fs, f"{BUCKET}/w/{i}.json", b"{}" * 50)
        pq.write_table(pa.table({"i": [i]}), f"{BUCKET}/w/{i}.parquet", filesystem=fs)
    assert [fsio.read_bytes(fs, f"{BUCKET}/w/{i}.json") for i in range(10)] == [b"{}" * 50] * 10
    assert [pq.read_table(f"{BUCKET}/w/{i}.parquet", filesystem=fs)["i"][0].as_py() for i in range(10)] == list(
        range(10)
    )


def test_the_filesystem_pickled_as_ray_ships_it_keeps_its_retries(throttled):
    fs, _ = throttled
    again = pickle.loads(pickle.dumps(fs))
    assert again.equals(fs) and fsio.to_uri(again, "b/k") == "s3://b/k"
    for _ in range(5):
        assert _small_column_reads(again) == [[1, 2, 3]] * 3


class _Counting:
    """A local file that records the size of every read it serves."""

    def __init__(self, f: pa.NativeFile) -> None:
        self.f, self.reads = f, []

    def size(self) -> int:
        return self.f.size()

    def read_at(self, n: int, offset: int) -> bytes:
        self.reads.append(n)
        return self.f.read_at(n, offset)

    def close(self) -> None:
        self.f.close()


@pytest.mark.parametrize("size", [60, s3_reads.MIN_GET, 3 * s3_reads.MIN_GET + 17])
def test_short_reads_return_exactly_what_was_asked_from_a_wider_get(tmp_path, size):
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    inner = _Counting(pa.OSFile(str(tmp_path / "f")))
    f = s3_reads.WideReads(inner)
    rng = random.Random(0)
    for _ in range(300):
        off, n = rng.randrange(size + 5), rng.choice([0, 1, 7, 200, s3_reads.MIN_GET, 2 * size])
        assert f.read_at(n, off) == data[off : off + n]
    f.seek(size - 3)
    assert f.read(100) == data[-3:] and f.tell() == size and f.read() == b""
    f.seek(0)
    assert f.read() == data
    assert min(inner.reads) >= min(size, s3_reads.MIN_GET)
    with pa.PythonFile(s3_reads.WideReads(_Counting(pa.OSFile(str(tmp_path / "f")))), mode="r") as p:
        assert p.read_at(5, 1) == data[1:6] and p.size() == size
