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
logger writes) through a small filter *process* (``python -m facepipe.run.ray_logs``) that drops
exactly those lines and forwards every other byte unchanged as it comes. A process, not a thread:
when the driver dies hard (SIGKILL, a segfault, a fatal error's traceback written to fd 2) the
filter still reads the pipe to its end and forwards all of it, then exits -- nothing written
before the crash is lost (``tests/run/test_ray_logs.py`` kills a driver mid-write). It is entered
after Ray is up, so the cluster's own processes (started by ``ray.init``) never inherit the pipe.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import contextmanager
from typing import BinaryIO, Iterator

#: The lines dropped: the constructor-arguments warning for Ray Data's own map workers only.
KNOWN = (
    re.compile(
        rb"core_worker\.cc:\d+: Actor with class name: 'MapWorker\(.*has constructor arguments in the object store"
    ),
)


def is_known(line: bytes) -> bool:
    return any(p.search(line) for p in KNOWN)


def filter_stream(src: BinaryIO, out: int) -> None:
    """Copy ``src`` to file descriptor ``out`` line by line as it comes, without the known lines."""
    pending = b""
    while chunk := src.read1(65536) if hasattr(src, "read1") else src.read(65536):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if not is_known(line):
                os.write(out, line + b"\n")
    if pending and not is_known(pending):
        os.write(out, pending)


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
    try:
        # the filter: stdin the pipe, stdout the real stderr; a session of its own, so Ctrl-C
        # (the terminal's process group) stops the driver, and the filter ends at the pipe's end
        filt = subprocess.Popen(
            [sys.executable, "-m", "facepipe.run.ray_logs"],
            stdin=r,
            stdout=saved,
            stderr=saved,
            close_fds=True,
            start_new_session=True,
        )
    except OSError:  # no process to start: leave stderr alone
        os.close(r), os.close(w), os.close(saved)
        yield
        return
    os.close(r)
    os.dup2(w, fd)
    os.close(w)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)  # closes the pipe's last write end: the filter reads to EOF and exits
        try:
            filt.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a child of the driver kept the pipe open: let it be
            pass
        os.close(saved)


if __name__ == "__main__":
    filter_stream(sys.stdin.buffer, sys.stdout.fileno())
