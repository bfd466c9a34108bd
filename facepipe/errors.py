"""Errors the CLI reports as one line instead of a traceback.

- :class:`UserError` (exit 2): a problem with the request -- a bad flag, a missing input.
- storage errors (exit 3): the object store or disk failed after every retry. They surface as an
  ``OSError`` from pyarrow's filesystems, often wrapped by Ray in a task error; :func:`storage_error`
  finds it in the exception chain.
- cluster errors (exit 3): Ray lost what a run needed and could not rebuild it -- a node gone with
  the only copy of an actor's output, a worker or the object's owner dead (:func:`cluster_error`),
  or a run that stopped making progress (:class:`ClusterStalled`).
- disk full (exit 3): ENOSPC/EDQUOT anywhere (:func:`disk_full`); the same command completes the
  run once space is freed.
  Nothing of the run was published; running the same command again redoes its work.
"""

from __future__ import annotations

import errno

#: what the CLI adds to a storage or cluster error's one line (exit 3)
RETRY_ADVICE = (
    " -- gave up after retrying; nothing more of this run is published and earlier runs stay readable; "
    "run the same command again"
)


class UserError(Exception):
    """A problem with the request: a bad flag value, a missing input, an unknown model."""


#: Markers of a storage failure worth retrying later (AWS SDK error names, curl and socket errors),
#: as opposed to a request that can never succeed (a wrong bucket, no permission).
_TRANSIENT = (
    "NETWORK_CONNECTION",
    "SLOW_DOWN",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_FAILURE",
    "REQUEST_TIME_TOO_SKEWED",
    "THROTTLING",
    "REQUEST_TIMEOUT",
    "curlCode",
    "Connection refused",
    "Connection reset",
    "timed out",
)


class ClusterStalled(RuntimeError):
    """A Ray run that made no progress for ``--stall-timeout`` seconds: tasks waiting for resources
    no node offers, a node lost with no replacement, a task or actor hung. The CLI exits 3."""


class StorageError(OSError):
    """Storage that did not answer after every retry; the CLI exits 3 (worth running again)."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError from storage that may succeed later (network, throttling,
    server errors) -- as opposed to a missing file or a denied permission."""
    return isinstance(exc, OSError) and any(m in str(exc) for m in _TRANSIENT)


def _chain(exc: BaseException):
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]  # RayTaskError keeps its cause in .cause


def storage_error(exc: BaseException) -> str | None:
    """The one-line message of the storage failure behind ``exc``, or None when it is not one.

    A storage failure is a :class:`StorageError` or an ``OSError`` that :func:`is_transient` calls
    transient (connection refused, timeouts, throttling, server errors) that outlived the S3
    client's retries. Other OSErrors -- a missing file, a denied permission, a column that cannot
    be decrypted -- are not worth running again and are not reported as storage errors.
    """
    for e in _chain(exc):
        if isinstance(e, StorageError) or is_transient(e):
            text = " ".join(str(e).split())
            return text[:500] or type(e).__name__
    return None


#: Ray's exceptions for work lost with a node, a worker or an object's owner (matched by class
#: name, so this module does not import Ray; a RayTaskError names the error it wraps in its MRO).
_LOST = frozenset(
    {
        "ObjectLostError",
        "ObjectFetchTimedOutError",
        "ObjectReconstructionFailedError",
        "ObjectReconstructionFailedMaxAttemptsExceededError",
        "ObjectReconstructionFailedLineageEvictedError",
        "OwnerDiedError",
        "ReferenceCountingAssertionError",
        "NodeDiedError",
        "WorkerCrashedError",
        "ActorDiedError",
        "ActorUnavailableError",
        "ActorUnschedulableError",
    }
)


def cluster_error(exc: BaseException) -> str | None:
    """The one-line message of the lost Ray work behind ``exc``, or None when it is not that."""
    for e in _chain(exc):
        names = {t.__name__ for t in type(e).__mro__}
        if names & _LOST:
            text = " ".join(str(e).split())
            return f"{sorted(names & _LOST)[0]}: {text[:400]}"
    return None


#: a disk (or quota) full: nothing is wrong with the job or the request; once space is freed
#: the same command completes the run
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def disk_full(exc: BaseException) -> str | None:
    """The one-line message of the full disk behind ``exc`` (ENOSPC/EDQUOT, as Python or pyarrow
    reports it, wrapped or not by Ray), or None."""
    for e in _chain(exc):
        if isinstance(e, OSError) and (e.errno in _FULL_ERRNOS or any(t in str(e) for t in _FULL_TEXT)):
            return " ".join(str(e).split())[:500]
    return None


#: what the CLI adds to each kind of :func:`retryable_error`'s one line
ADVICE = {
    "storage": RETRY_ADVICE,
    "cluster": RETRY_ADVICE,
    "disk full": (
        " -- nothing more of this run is published and earlier runs stay readable; free space (or grow the volume) "
        "and run the same command again"
    ),
    "busy": "",  # its message says what to do
}


def retryable_error(exc: BaseException) -> tuple[str, str] | None:
    """("busy" | "disk full" | "storage" | "cluster", one-line message) for a failure that running
    again may fix (exit 3), or None. "busy": another writer holds the output
    (``facepipe.storage.lease``); "disk full": the output's (or a temp) filesystem is full."""
    for e in _chain(exc):
        if type(e).__name__ in ("OutputBusy", "LeaseLost"):
            return "busy", str(e)
    why = disk_full(exc)
    if why is not None:
        return "disk full", why
    why = storage_error(exc)
    if why is not None:
        return "storage", why
    for e in _chain(exc):
        if isinstance(e, ClusterStalled):
            return "cluster", str(e)
    why = cluster_error(exc)
    return ("cluster", why) if why is not None else None
