"""Each benchmark's machine-readable record, next to the human summary it prints.

A benchmark calls :func:`numbers` with what it measured (as it prints it) and runs its ``main``
through :func:`run`; at the end :func:`run` writes ``bench/records/ROLE.NAME.json`` (or
``$FACEPIPE_BENCH_RECORDS/...``): the commit (and whether the tree was dirty), the machine (CPU,
cores, memory, GPU, Python, torch, Ray), the command line, the start and the seconds it took, and
the numbers. RESULTS.md quotes the human summary; the records let a later run be compared with a
script instead of by eye.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
_NUMBERS: dict[str, Any] = {}


def numbers(**values: Any) -> None:
    """Add measured values to this run's record (later calls add or replace keys)."""
    _NUMBERS.update(values)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    for mod in ("torch", "ray", "pyarrow", "numpy"):
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", "")
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        info["gpu"] = sys.modules["torch"].cuda.get_device_name(0)
    return info


def run(main: Callable[[], Any], name: str) -> None:
    """Run a benchmark's ``main`` (``name``: its module, ``bench.ROLE.NAME``), then write its
    record. A ``main`` that returns a dict adds it to the numbers; its int return is the exit status."""
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    result = main()
    if isinstance(result, dict):
        numbers(**result)
    elif result is not None and not isinstance(result, int):
        numbers(result=[dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in result])
    record = {
        "benchmark": name,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": machine(),
        "argv": sys.argv[1:],
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
        "numbers": _NUMBERS,
    }
    root = Path(os.environ.get("FACEPIPE_BENCH_RECORDS", REPO / "bench" / "records"))
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name.removeprefix('bench.')}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"record: {path}", file=sys.stderr)
    sys.exit(result if isinstance(result, int) else 0)
