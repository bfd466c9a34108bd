"""Where a cluster run's time and memory go: each part's wall seconds and the process's peak
memory when it ended, logged as it ends and kept in the run's summary (``phases``), so a slow or
large night shows its parts without a profiler (bench/RESULTS.md reads them)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def peak_gib() -> float | None:
    """This process's own peak resident memory in GiB (Linux's VmHWM: its memory since exec, not
    ``ru_maxrss``, which a child inherits from its parent across fork and exec); None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return None
    return round(kib / 2**20, 3)


class Phases:
    """A run's parts in order: :meth:`done` closes the part running since the last one."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, float | None]] = {}
        self._t = time.perf_counter()

    def done(self, part: str) -> None:
        now = time.perf_counter()
        s = self.parts.get(part, {}).get("s", 0.0) + now - self._t  # a part met twice adds up
        self.parts[part] = {"s": round(s, 3), "peak_gib": peak_gib()}
        log.info("cluster: %s %.1f s (peak %s GiB)", part, now - self._t, self.parts[part]["peak_gib"])
        self._t = time.perf_counter()
