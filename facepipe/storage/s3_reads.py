"""S3 reads that survive throttling: no GET smaller than :data:`MIN_GET`, and the few that must be
(objects smaller than that) retried when an error answer overflowed them.

Why: pyarrow hands the AWS SDK a buffer the size of the requested range as the GET's response
stream, and the SDK writes every answer's body into it -- an error's XML included. When S3 answers
``503 SlowDown`` (a few hundred bytes) to a GET of fewer bytes (a small column chunk of a Parquet
file: ``run_id``, ``face_index``; a tar shard's last bytes), the stream overflows and the SDK
reports a non-retryable ``INTERNAL_FAILURE: Failed to flush response stream`` instead of retrying
the 503 (apache/doris#66557 traces the same path). Under throttling, reading one small column of
a table file then failed every time, and a run with it (tests/storage/test_s3_faults.py's SlowDown
bursts, in CI). Reads of at least :data:`MIN_GET` bytes hold any error document, so the SDK sees
the 503 and retries it with its backoff (``facepipe.storage.fs``).

:class:`S3Reads` is a ``pyarrow.fs.FileSystemHandler`` over a native ``S3FileSystem``: every
operation is the native one (writes and listings included, at native speed) except opening a file
to read, which returns a :class:`WideReads` file. It is what ``fs.s3_filesystem()`` returns, so
every reader -- ``pq.read_table``, datasets, our own -- goes through it.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.fs as pafs

#: the smallest GET issued to S3 (bytes): far above any S3 error document (< 1 KiB)
MIN_GET = 8 << 10
FLUSH_FAILURE = "Failed to flush response stream"


def _retrying(attempts: int, read, *args):
    """``read(*args)``; a GET that still overflowed (an object smaller than MIN_GET) is tried
    again as the SDK would have retried the error it hid: ``attempts`` tries, 25 ms x 2^n apart."""
    for attempt in range(attempts):
        try:
            return read(*args)
        except OSError as e:
            if FLUSH_FAILURE not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.025 * 2**attempt)
    raise AssertionError("unreachable")


class WideReads:
    """A readable, seekable file over a native S3 input file whose GETs are never smaller than
    :data:`MIN_GET` (unless the object is): a short read fetches the window of MIN_GET bytes
    around it and keeps only what was asked for. Wrapped in ``pa.PythonFile`` to be a pyarrow
    file again."""

    def __init__(self, f: pa.NativeFile, attempts: int = 1) -> None:
        self._f, self._attempts = f, attempts
        self._size = f.size()
        self._pos = 0
        self.closed = False

    def read_at(self, n: int, offset: int) -> bytes:
        """``n`` bytes from ``offset`` (pyarrow's ``read_at`` order)."""
        n = max(0, min(n, self._size - offset))
        if n == 0:
            return b""
        if n >= MIN_GET or self._size <= n:
            return _retrying(self._attempts, self._f.read_at, n, offset)
        start = max(0, min(offset, self._size - MIN_GET))
        window = _retrying(self._attempts, self._f.read_at, min(MIN_GET, self._size), start)
        return window[offset - start : offset - start + n]

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._size - self._pos
        data = self.read_at(n, self._pos)
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = {0: pos, 1: self._pos + pos, 2: self._size + pos}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self._f.close()
            self.closed = True


class S3Reads(pafs.FileSystemHandler):
    """A native ``S3FileSystem(**options)`` with ``attempts`` tries a request (the SDK's "default"
    retry strategy), but files opened to read are :class:`WideReads`. Pickled as its options:
    a pickled ``S3FileSystem`` comes back with pyarrow's default retry strategy (3 attempts from
    a quota shared by the process), not the one it was made with."""

    def __init__(self, options: dict, attempts: int) -> None:
        self.options, self.attempts = options, attempts
        retry = pafs.AwsDefaultS3RetryStrategy(max_attempts=attempts)
        self.fs = pafs.S3FileSystem(**options, retry_strategy=retry)

    def __eq__(self, other) -> bool:
        return isinstance(other, S3Reads) and (self.options, self.attempts) == (other.options, other.attempts)

    def __reduce__(self):
        return S3Reads, (self.options, self.attempts)

    def get_type_name(self) -> str:
        return "s3"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_file(self, path):
        return pa.PythonFile(WideReads(self.fs.open_input_file(path), self.attempts), mode="r")

    def open_input_stream(self, path):
        return self.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)


def s3_filesystem(options: dict, attempts: int) -> pafs.PyFileSystem:
    """An S3 filesystem (:class:`S3Reads`) made with ``pyarrow.fs.S3FileSystem``'s ``options``."""
    return pafs.PyFileSystem(S3Reads(options, attempts))


def is_s3(fs: pafs.FileSystem) -> bool:
    """Whether ``fs`` reaches S3 (the native filesystem or :class:`S3Reads` over it)."""
    return isinstance(fs, pafs.S3FileSystem) or (isinstance(fs, pafs.PyFileSystem) and isinstance(fs.handler, S3Reads))
