"""Errors the CLI reports as one line instead of a traceback.

- :class:`UserError` (exit 2): a problem with the request -- a bad flag, a missing input.
- storage errors (exit 3): the object store or disk failed after every retry. They surface as an
  ``OSError`` from pyarrow's filesystems, often wrapped by Ray in a task error; :func:`storage_error`
  finds it in the exception chain.
"""

from __future__ import annotations


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
