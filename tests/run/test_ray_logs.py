"""Ray's known false alarm (Ray Data's actor-pool constructor-arguments line, ray#57733) is kept
out of stderr; everything else written there passes unchanged and in order -- also when the
driver dies hard in the middle (the filter is a process of its own that drains the pipe)."""

import subprocess
import sys

from facepipe.run.ray_logs import is_known

KNOWN_LINE = (
    "[2026-12-02 12:54:00,756 E 3642 3642] core_worker.cc:2465: Actor with class name: "
    "'MapWorker(MapBatches(FaceActor))' and ID: 'c53f' has constructor arguments in the object store and "
    "max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor restart will fail."
)


def test_only_ray_datas_own_map_worker_line_is_known():
    assert is_known(KNOWN_LINE.encode())
    other_actor = KNOWN_LINE.replace("MapWorker(MapBatches(FaceActor))", "MyActor")
    assert not is_known(other_actor.encode()), "a user's own actor keeps its warning"
    assert not is_known(b"[2026-12-02 12:54:00,756 E 3642 3642] core_worker.cc:99: Failed to ...")


def test_stderr_passes_through_except_the_known_line():
    """Written at the file-descriptor level, as Ray's C++ logger writes, in a fresh process."""
    code = f"""
import os, sys
from facepipe.run.ray_logs import quiet_known_ray_errors
os.write(2, b"before\\n")
with quiet_known_ray_errors():
    os.write(2, b"one\\n")
    os.write(2, {KNOWN_LINE.encode()!r} + b"\\n")
    print("two", file=sys.stderr, flush=True)
    os.write(2, b"partial ")
    os.write(2, b"line\\nlast without newline")
os.write(2, b"\\nafter\\n")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "before\none\ntwo\npartial line\nlast without newline\nafter\n"


def test_a_driver_killed_mid_run_loses_nothing_it_wrote():
    code = f"""
import os, signal
from facepipe.run.ray_logs import quiet_known_ray_errors
with quiet_known_ray_errors():
    for i in range(2000):
        os.write(2, b"line %d of what the driver wrote\\n" % i)
    os.write(2, {KNOWN_LINE.encode()!r} + b"\\n")
    os.write(2, b"Fatal Python error: the last words")
    os.kill(os.getpid(), signal.SIGKILL)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9
    lines = r.stderr.splitlines()
    assert lines[:2000] == [f"line {i} of what the driver wrote" for i in range(2000)]
    assert lines[2000:] == ["Fatal Python error: the last words"], lines[2000:]
