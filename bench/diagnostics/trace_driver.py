"""`facepipe run`'s driver, watched from inside: what in its memory grows as a run goes on.

    .venv/bin/python -m bench.diagnostics.trace_driver REPORT [--every 10] [--tracemalloc] -- run ARGS...

Runs ``facepipe.cli.main(ARGS)`` in this process. Every ``--every`` seconds REPORT gains a line:
seconds since start, the process's anonymous resident memory (its own heap: Python's and every
C/C++ library's), the blocks Python's allocator holds (``sys.getallocatedblocks``), the object
references Ray's core worker tracks in the driver, the objects in its in-process memory store,
and the live count of each type in ``--types`` (``gc``). With ``--tracemalloc`` (1 frame) it
also writes the Python heap tracemalloc sees and, at the end, the source lines whose memory grew
most since the first line after ``--start`` seconds. Anonymous memory growing while Python's blocks stay flat
is memory outside Python (Ray's C++ core worker, the C allocator). bench/speed/scale.py
``--trace-driver REPORT`` runs the 10^5-image benchmark's driver this way.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
import tracemalloc
from pathlib import Path

from bench import record
from bench.speed.scale import rss_parts  # bench/, this script's folder

TYPES = "BlockStats,BlockMetadata,BlockExecStats,RefBundle,dict,list,tuple"


def _counts(names: set[str]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for o in gc.get_objects():
        name = type(o).__name__
        if name in counts:
            counts[name] += 1
    return counts


def _core() -> list[str]:
    """Object references the driver's core worker tracks (its reference table) and the objects in
    its in-process memory store (small task results are inlined there, in the owner's anonymous
    memory, not in the shared object store)."""
    import ray

    if not ray.is_initialized():
        return ["0", "0"]
    core = ray._private.worker.global_worker.core_worker
    return [str(len(core.get_all_reference_counts())), str(core.get_memory_store_size())]


def watch(a: argparse.Namespace, t0: float, stop: threading.Event) -> None:
    names, base = set(a.types.split(",")), None
    with a.report.open("w", buffering=1) as f:
        head = (
            ["seconds", "anon_MiB", "py_blocks", "object_refs", "in_memory_store"]
            + (["traced_MiB"] if a.tracemalloc else [])
            + sorted(names)
        )
        f.write(" ".join(head) + "\n")
        while not stop.wait(a.every):
            t = time.time() - t0
            row = [f"{t:.0f}", f"{rss_parts()['RssAnon'] / 2**20:.1f}", str(sys.getallocatedblocks()), *_core()]
            if a.tracemalloc:
                row.append(f"{tracemalloc.get_traced_memory()[0] / 2**20:.1f}")
                if base is None and t >= a.start:
                    base = tracemalloc.take_snapshot()
            counts = _counts(names)
            f.write(" ".join(row + [str(counts[n]) for n in sorted(names)]) + "\n")
        if base is not None:
            f.write(f"\nsource lines whose Python memory grew most since {a.start:.0f}s:\n")
            for s in tracemalloc.take_snapshot().compare_to(base, "lineno")[:15]:
                f.write(f"  {s.size_diff / 2**20:+.2f} MiB {s.count_diff:+d} blocks {s.traceback[0]}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--start", type=float, default=60.0, help="seconds before tracemalloc's baseline")
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--types", default=TYPES, help="comma-separated type names to count")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a, args = ap.parse_args(argv[:cut]), argv[cut + 1 :]  # `facepipe` arguments after --
    if a.tracemalloc:
        tracemalloc.start(1)
    stop, t0 = threading.Event(), time.time()
    t = threading.Thread(target=watch, args=(a, t0, stop), daemon=True)
    t.start()
    from facepipe.cli import main as facepipe

    code = facepipe(args)
    stop.set()
    t.join()
    sys.exit(code)


if __name__ == "__main__":
    record.run(main, "bench.diagnostics.trace_driver")
