"""One writer per output: a lease every writer (``facepipe run``, ``score``, ``cluster``,
``forget``) takes before it changes anything, and readers never need.

The lease is a sequence of generation files ``OUT/_lease/GEN.json`` (holder, token, start,
expiry). Taking it: read the newest generation; if it is still live, refuse
(:class:`OutputBusy`: exit 3, retryable, naming the holder and its start); else create generation
+1 *exclusively* -- ``O_EXCL`` on a local disk, ``If-None-Match: *`` on S3 -- so of two writers
racing for it exactly one wins. A heartbeat thread pushes the expiry forward while the holder
works (a local renewal written beside and moved over; a lease read torn or mid-release is read
again, never taken for dead); a holder that dies stops renewing and its lease expires after ``ttl_s``
(``FACEPIPE_LEASE_TTL_S``, default 120 s), so a killed run never blocks the next one for longer;
on the same host a holder whose process is gone is known dead at once (its pid, from /proc).
Before every publish the holder checks it still holds the newest live generation
(:func:`check`, called by ``Output.publish``): one that lost it (its heartbeat could not reach
the storage for a whole ``ttl_s``, and another writer took over) stops with :class:`LeaseLost`
instead of writing beside the new holder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator

from facepipe.errors import StorageError
from facepipe.storage import fs as fsio
from facepipe.storage.output import Output

log = logging.getLogger(__name__)

LEASES = "_lease"
DEFAULT_TTL_S = 120.0


class OutputBusy(StorageError):
    """Another writer holds the output's lease (exit 3: try again later)."""


class LeaseLost(StorageError):
    """This writer's lease expired and another writer took the output over (exit 3)."""


def ttl_s() -> float:
    try:
        return max(1.0, float(os.environ.get("FACEPIPE_LEASE_TTL_S", DEFAULT_TTL_S)))
    except ValueError:
        return DEFAULT_TTL_S


@dataclass
class Lease:
    output: Output
    gen: int
    holder: str
    token: str
    ttl_s: float
    started: float
    _stop: threading.Event = field(default_factory=threading.Event)
    _renewing: threading.Thread | None = None

    @property
    def path(self) -> str:
        return self.output.path(LEASES, f"{self.gen:09d}.json")

    def body(self) -> bytes:
        expires = time.time() + self.ttl_s
        return json.dumps(
            {"holder": self.holder, "token": self.token, "started": self.started, "expires": expires, **_HERE}
        ).encode()


#: the leases this process holds, by output URI (``check`` looks here)
_HELD: dict[str, Lease] = {}
#: where a lease is taken: a holder on this host whose process is gone is known dead at once
_HERE = {"host": socket.gethostname(), "pid": os.getpid()}


def _gone(holder: dict) -> bool:
    """Whether the lease's holder is a process of this host that no longer runs (killed, crashed):
    then its lease is stale now, not only once it expires. A holder on another host: unknown."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        with open(f"/proc/{holder['pid']}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie has ended too
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False


def _listing(output: Output) -> list[str]:
    """The generation files. A local listing races with writers creating and deleting files in
    the folder (a temp file linked and unlinked, a released lease): pyarrow then reports the
    folder itself as missing (found by tests/storage/test_lease.py's six racing writers); the
    listing is taken again."""
    for attempt in range(20):
        try:
            return output.files(LEASES, suffix=".json")
        except FileNotFoundError:
            if attempt == 19:
                raise
            time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


#: how long a release waits for a renewal under way (one write; the S3 client retries within it)
RENEWAL_WAIT_S = 30.0
#: reads of an unreadable newest lease before it counts as not live (0.45 s in all)
_READS = 9


def _newest(output: Output) -> tuple[int, dict | None]:
    """The newest generation and its lease (None: none, or unreadable each time: foreign, not live).
    A read can catch a renewal half written -- SeaweedFS serves an object being overwritten torn
    (measured: 7 of 7,095 reads beside a renewing holder) -- or a generation just released, so an
    unreadable lease is read again: taken for dead at once, it cost a live holder its output."""
    gen = 0
    for attempt in range(_READS):
        files = _listing(output)
        if not files:
            return 0, None
        gen = int(files[-1].rsplit("/", 1)[1][:-5])
        try:
            return gen, json.loads(fsio.read_bytes(output.fs, files[-1]))
        except (ValueError, OSError):
            time.sleep(0.01 * (attempt + 1))
    return gen, None


def _create_exclusive(output: Output, path: str, data: bytes) -> bool:
    """Create ``path`` only if nothing is there; False when something is."""
    if fsio.is_s3(output.uri):
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = path.split("/", 1)
        retries = {"max_attempts": fsio.s3_retry_attempts(), "mode": "legacy"}  # as many tries as pyarrow's requests
        try:
            boto3.client("s3", config=Config(retries=retries)).put_object(
                Bucket=bucket, Key=key, Body=data, IfNoneMatch="*"
            )
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise StorageError(f"taking the lease of {output.uri}: {e}") from e
        except BotoCoreError as e:  # no answer at all (the endpoint unreachable past the retries)
            raise StorageError(f"taking the lease of {output.uri}: {e}") from e
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:  # whole before it has its name: a reader never finds it half written
            f.write(data)
        os.link(tmp, path)  # fails if the name exists: the exclusive create
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):  # a full disk: the write failed, maybe before creating it
            os.unlink(tmp)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def acquire(output: Output, holder: str, ttl: float | None = None) -> Lease:
    """Take the output's lease for ``holder`` (e.g. ``facepipe run nightly-2026-12-01``), or
    raise :class:`OutputBusy` naming whoever holds it."""
    ttl = ttl or ttl_s()
    who = f"{holder} (host {socket.gethostname()}, pid {os.getpid()})"
    for _ in range(5):  # lost a race for a generation: look again
        gen, cur = _newest(output)
        if cur is not None and cur["expires"] > time.time() and not _gone(cur):
            raise OutputBusy(
                f"{output.uri} is being written by {cur['holder']} since {_when(cur['started'])} (its lease runs "
                f"until {_when(cur['expires'])} unless renewed); one writer at a time -- run again when it is done"
            )
        lease = Lease(output, gen + 1, who, uuid.uuid4().hex, ttl, time.time())
        if _create_exclusive(output, lease.path, lease.body()):
            for old in _listing(output)[:-1]:  # superseded generations
                output.fs.delete_file(old)
            _HELD[output.uri] = lease
            lease._renewing = threading.Thread(target=_heartbeat, args=(lease,), name="facepipe-lease", daemon=True)
            lease._renewing.start()
            log.info("took the lease of %s (generation %d)", output.uri, lease.gen)
            return lease
    raise OutputBusy(f"{output.uri}: other writers keep taking its lease; run again later")


def _renew(lease: Lease) -> None:
    """The lease's file rewritten with a later expiry: on a local disk beside it and moved over
    (a reader never finds it half written); on S3 one PUT."""
    if fsio.is_s3(lease.output.uri):
        fsio.write_bytes(lease.output.fs, lease.path, lease.body())
        return
    tmp = f"{lease.path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(lease.body())
        os.replace(tmp, lease.path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _heartbeat(lease: Lease) -> None:
    while not lease._stop.wait(lease.ttl_s / 4):
        try:
            _renew(lease)
        except OSError as e:  # storage trouble: the next publish's check tells whether it still holds
            log.warning("could not renew the lease of %s: %s", lease.output.uri, e)


def check(output: Output) -> None:
    """Raise :class:`LeaseLost` if this process took the output's lease and no longer holds it
    (a newer generation exists, or its own expired). Outputs it took no lease on pass."""
    lease = _HELD.get(output.uri)
    if lease is None:
        return
    gen, cur = _newest(output)
    if gen != lease.gen or cur is None or cur.get("token") != lease.token or cur["expires"] <= time.time():
        raise LeaseLost(
            f"{output.uri}: this writer's lease was lost (generation {lease.gen}, newest {gen}); stopped before "
            "publishing beside another writer -- run again"
        )


def release(lease: Lease) -> None:
    """Stop renewing and give the lease up (its file deleted), unless it was lost meanwhile. A
    renewal under way is waited for first (at most :data:`RENEWAL_WAIT_S`): written after the
    delete, it brought the lease back, and the next writer waited out its TTL (on S3, 36 of 100
    releases of a lease renewed every 5 ms)."""
    lease._stop.set()
    if lease._renewing is not None and lease._renewing is not threading.current_thread():
        lease._renewing.join(RENEWAL_WAIT_S)
    _HELD.pop(lease.output.uri, None)
    gen, cur = _newest(lease.output)
    if gen == lease.gen and cur is not None and cur.get("token") == lease.token:
        lease.output.fs.delete_file(lease.path)


@contextmanager
def held(output: Output, holder: str) -> Iterator[Lease]:
    """The output's lease for the block (:func:`acquire`, then :func:`release`)."""
    lease = acquire(output, holder)
    try:
        yield lease
    finally:
        release(lease)
