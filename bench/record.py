"""Each benchmark's machine-readable record, next to the human summary it prints.

A benchmark runs its ``main`` through :func:`run` and calls :func:`numbers` with the figures it
reports; at the end :func:`run` writes ``bench/records/ROLE.NAME.json`` (or
``$FACEPIPE_BENCH_RECORDS/...``): the commit (and whether the tree was dirty), the machine (CPU,
cores, memory, GPU, Python, torch, Ray), the command line, the start and the seconds it took, the
numbers, and the human summary it printed (stdout, as printed: every figure is in it even where a
script names none with :func:`numbers`). RESULTS.md quotes the human summary; the records let a
later run be compared with a script instead of by eye.
"""

from __future__ import annotations

import dataclasses
import io
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


class _Tee(io.TextIOBase):
    """stdout as it was, and a copy of what is printed."""

    def __init__(self, out: Any) -> None:
        self.out, self._parts = out, []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()

    def text(self) -> str:
        return "".join(self._parts)


def run(main: Callable[[], Any], name: str) -> None:
    """Run a benchmark's ``main`` (``name``: its module, ``bench.ROLE.NAME``), then write its
    record. A ``main`` that returns a dict adds it to the numbers; its int return is the exit status."""
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    printed = _Tee(sys.stdout)
    sys.stdout = printed
    try:
        result = main()
    finally:
        sys.stdout = printed.out
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
        "summary": printed.text()[-200_000:],
    }
    root = Path(os.environ.get("FACEPIPE_BENCH_RECORDS", REPO / "bench" / "records"))
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name.removeprefix('bench.')}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"record: {path}", file=sys.stderr)
    sys.exit(result if isinstance(result, int) else 0)
