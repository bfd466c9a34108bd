"""One filesystem seam for local paths and ``s3://`` URIs (pyarrow.fs).

S3 settings come from the standard AWS environment, read where the filesystem is created (on
each Ray worker, so credentials are never captured into task arguments or logs):
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` or the instance
profile, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), and ``AWS_ENDPOINT_URL_S3`` (or
``AWS_ENDPOINT_URL``) for S3-compatible servers such as SeaweedFS or MinIO.

Every S3 request is retried by the AWS SDK with exponential backoff (25 ms x 2^n, no jitter, no
retry quota shared between requests): ``FACEPIPE_S3_RETRIES`` attempts (default 11) ride out an
outage of about 25 ms x 2^(attempts-1) -- 51 s by default -- after which the request fails and
the job reports a storage error (``facepipe.errors.storage_error``). The SDK's "standard" mode
was not used: its retry quota (500 tokens, 5 a retry) is shared by all requests of a process, so
an outage under many parallel reads drains it and later requests fail without waiting.

Two ways throttling (``503 SlowDown``) defeated those retries, both found by
tests/storage/test_s3_faults.py: a GET smaller than S3's error document fails without a retry
(reads go through ``s3_reads``, which never asks for so little), and a small object written as a
multipart upload could not be completed under sustained throttling (pyarrow re-sends
CompleteMultipartUpload when an earlier answer in the SDK's retries was an error, and each re-send
met the throttle again). Objects smaller than a part are therefore written with one PutObject
(``allow_delayed_open``), which the SDK retries like any request.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from urllib.parse import urlparse

import pyarrow.fs as pafs

from facepipe.errors import is_transient
from facepipe.storage import s3_reads

S3_RETRY_ATTEMPTS = 11


def s3_retry_attempts() -> int:
    try:
        return max(1, int(os.environ.get("FACEPIPE_S3_RETRIES", S3_RETRY_ATTEMPTS)))
    except ValueError:
        return S3_RETRY_ATTEMPTS


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


@lru_cache(maxsize=4)
def _s3(endpoint: str | None, region: str, attempts: int) -> pafs.FileSystem:
    kw: dict = {"region": region, "allow_delayed_open": True}  # smaller than a part: one PutObject
    if endpoint:
        u = urlparse(endpoint)
        kw["endpoint_override"] = u.netloc or u.path
        kw["scheme"] = u.scheme or "https"
        kw["force_virtual_addressing"] = False
    return s3_reads.s3_filesystem(kw, attempts)


def s3_filesystem() -> pafs.FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return _s3(endpoint, region, s3_retry_attempts())


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """``uri`` -> (filesystem, path inside it). Local paths become absolute."""
    if is_s3(uri):
        return s3_filesystem(), uri[len("s3://") :].rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported URI scheme in {uri!r} (use a local path or s3://bucket/prefix)")
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return pafs.LocalFileSystem(), os.path.abspath(path)


def to_uri(fs: pafs.FileSystem, path: str) -> str:
    """Inverse of :func:`resolve`: what users see in ``source_uri`` and in messages."""
    return f"s3://{path}" if s3_reads.is_s3(fs) else path


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


#: A whole-object read that fails with a transient error (``errors.is_transient``: a dropped
#: connection past the SDK's retries) is tried again this many times, waiting 0.1 s doubling
#: (6.3 s in all); an error answer that overflowed a small GET is retried below it, like the
#: SDK's own retries (``s3_reads``). Other reads (ranges of tar shards and Parquet files) record
#: the unit for the next run instead.
READ_RETRIES = 6


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    """The whole file or object (see :data:`READ_RETRIES`)."""
    for attempt in range(READ_RETRIES + 1):
        try:
            with fs.open_input_stream(path) as f:
                return f.readall()
        except OSError as e:
            if not is_transient(e) or s3_reads.FLUSH_FAILURE in str(e) or attempt == READ_RETRIES:
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)
