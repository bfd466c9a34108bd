"""Ray's own false alarms, kept out of a healthy run's stderr.

Ray's core worker logs, at error level and straight to the driver's stderr (C++, not Python
logging), one line per model actor: "Actor with class name: 'MapWorker(...)' ... has constructor
arguments in the object store and max_restarts > 0". Ray Data itself passes those arguments (its
DataContext and the map transformer, put in the object store by the operator and held by the
driver for the whole run) and sets ``max_restarts=-1`` on every actor pool (ray-project/ray#57733,
open); the restart hazard it warns of (#53727: an argument lost before a restart) needs the
driver's objects gone, which ends the run anyway. It is not the user's error, and a user reading
"E ... core_worker.cc" on every run learns to ignore error lines.

:func:`quiet_known_ray_errors` passes the process's stderr (file descriptor 2, where the C++
logger writes) through a thread that drops exactly those lines -- logged at debug level instead --
and forwards every other byte unchanged as it comes. It is entered after Ray is up, so the
cluster's own processes (started by ``ray.init``) never inherit the pipe.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

#: The lines dropped: the constructor-arguments warning for Ray Data's own map workers only.
KNOWN = (
    re.compile(
        rb"core_worker\.cc:\d+: Actor with class name: 'MapWorker\(.*has constructor arguments in the object store"
    ),
)


def is_known(line: bytes) -> bool:
    return any(p.search(line) for p in KNOWN)


@contextmanager
def quiet_known_ray_errors(fd: int = 2) -> Iterator[None]:
    """Within the block, lines written to ``fd`` that match :data:`KNOWN` are dropped; all else
    passes through. Restores ``fd`` on exit, after forwarding everything written before."""
    try:
        sys.stderr.flush()
        saved = os.dup(fd)
    except (OSError, ValueError):  # no usable stderr (closed, or not a real file descriptor)
        yield
        return
    r, w = os.pipe()
    os.dup2(w, fd)
    os.close(w)

    out = os.dup(saved)  # the pump's own: it may outlive the block if a child kept the pipe open

    def pump() -> None:
        try:
            with os.fdopen(r, "rb", buffering=0) as src:
                pending = b""
                while chunk := src.read(65536):
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        if is_known(line):
                            log.debug("dropped Ray's known false alarm: %s", line.decode(errors="replace"))
                        else:
                            os.write(out, line + b"\n")
                if pending and not is_known(pending):
                    os.write(out, pending)
        finally:
            os.close(out)

    t = threading.Thread(target=pump, name="facepipe-stderr-filter", daemon=True)
    t.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)  # closes the pipe's last write end: the pump reads to EOF and stops
        t.join(timeout=10)
        os.close(saved)
