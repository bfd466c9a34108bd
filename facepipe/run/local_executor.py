"""The local executor: the extract chain without Ray, for a small job on one machine.

Starting a local Ray cluster, Ray Data's executor and a model actor per core costs a run ~12 s
before the first photo is embedded, and shutting it down ~1.5 s more: two thirds of a 200-photo
run (bench/RESULTS.md, "Speed on ordinary photos"). A run with no cluster to join, local paths
only and little input (``ComputeConfig.local_max_bytes``) skips all of that: the driver builds
the chain's model steps once, forks one worker process per core (they share its loaded models),
and the workers take input units from a queue as they finish, each through the chain's steps up
to the write -- the same steps, declared once in ``facepipe.run.steps``, as the Ray executor
runs. The driver runs the write step over the rows gathered. Same tables as a Ray run
(``tests/run/test_local_executor.py``, ``tests/run/test_steps.py``); which rows share a file differs.

Not for large or remote runs: a worker that dies ends the run at once (Ray would restart it),
and inputs on S3 stay with Ray (the AWS SDK's state does not survive a fork).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pyarrow as pa

from facepipe.errors import UserError
from facepipe.run.steps import Chain, Step
from facepipe.stages.read.sources import ReadConfig, Unit, read_units
from facepipe.storage.fs import is_s3

if TYPE_CHECKING:
    from facepipe.config import RunConfig

#: what the forked workers inherit from the driver: the read settings and the worker steps, bound
#: (classes built once, in the driver: the workers share its loaded models)
_JOB: tuple[ReadConfig, list[tuple[Step, Callable]]] | None = None


def on_gpu(cfg: RunConfig) -> bool:
    """Whether the run's models would run on CUDA here (``--device`` auto with a GPU, or cuda)."""
    from facepipe.run.actors import resolve_device

    return resolve_device(cfg.compute.device) == "cuda"


def local_possible(cfg: RunConfig, ray_address: str | None) -> bool:
    """Whether this run may go without Ray: ``--executor local``, or ``auto`` with no cluster to
    join (no address, none in RAY_ADDRESS, not connected already), only local paths and no GPU
    for the models (CUDA does not survive the fork of the workers: with a GPU, ``auto`` takes Ray,
    a GPU actor pool beside CPU decode tasks)."""
    if cfg.compute.executor == "ray" or (cfg.compute.executor == "auto" and on_gpu(cfg)):
        return False
    connected = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    remote = ray_address or os.environ.get("RAY_ADDRESS") or connected
    possible = not remote and not any(is_s3(p) for p in cfg.paths())
    if cfg.compute.executor == "local" and not possible:
        raise UserError(
            "--executor local runs on this machine over local paths: drop --ray-address / RAY_ADDRESS, "
            "and use --executor ray (the default picks it) for s3:// inputs or output"
        )
    return possible


def worth_ray(cfg: RunConfig, units: list[Unit]) -> bool:
    """For a run :func:`local_possible` allows: whether to use Ray after all -- ``auto`` and
    more than ``local_max_bytes`` of planned input, enough for Ray's start-up to pay for itself."""
    return cfg.compute.executor == "auto" and sum(u.size for u in units) > cfg.compute.local_max_bytes


def local_workers(cfg: RunConfig, units: list[Unit]) -> int:
    """Worker processes for a local run: one per CPU (at most one per unit); on a GPU
    (``--executor local --device cuda``) none forked at all -- the chain runs in this process,
    the only one that touches CUDA."""
    return 1 if on_gpu(cfg) else min(local_cpus(), max(len(units), 1))


def local_cpus() -> int:
    """The CPUs this process may run on (taskset, a cgroup cpuset), as a local Ray cluster gets."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """A table as the numpy batch Ray Data hands a ``batch_format="numpy"`` function."""
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _table(batch: pa.Table | dict[str, np.ndarray]) -> pa.Table:
    if isinstance(batch, pa.Table):
        return batch
    return pa.table({k: list(v) if v.dtype == object else v for k, v in batch.items()})


def _bound(step: Step) -> Callable:
    """A step ready to call on a batch: its class built (one intra-op thread), or its function with its arguments."""
    if step.is_class:
        return step.fn(**step.kwargs, torch_threads=1)
    return functools.partial(step.fn, **step.kwargs)


def _apply(steps: list[tuple[Step, Callable]], tables: list[pa.Table]) -> list[pa.Table]:
    """``tables`` (one unit's read blocks) through ``steps``, each called per batch as it
    declares: the batches as they come, or ``batch_size`` rows at a time."""
    for step, call in steps:
        if step.batch_size:
            whole = pa.concat_tables(tables) if tables else None
            tables = (
                [whole.slice(s, step.batch_size) for s in range(0, whole.num_rows, step.batch_size)] if whole else []
            )
        tables = [_table(call(_numpy(t) if step.batch_format == "numpy" else t)) for t in tables]
        tables = [t for t in tables if t.num_rows]
    return tables


def apply_steps(steps: list[Step], tables: list[pa.Table]) -> list[pa.Table]:
    """``tables`` through ``steps`` in this process (each class built once, one torch thread):
    what a worker does with its units, for a few rows (``facepipe search``'s query photos)."""
    return _apply([(s, _bound(s)) for s in steps], tables)


def _unit_rows(unit: Unit) -> pa.Table | None:
    """One unit read and taken through the worker steps (in a worker)."""
    read, steps = _JOB
    out = _apply(steps, list(read_units([unit], read)))
    return pa.concat_tables(out) if out else None


def run_chain(chain: Chain, units: list[Unit], workers: int, stall_s: float) -> list[dict]:
    """The extract chain over ``units``: its steps up to the first ``write`` step in ``workers``
    forked processes, the rest in this one over the rows gathered (a ``write`` step's
    ``batch_size`` rows, or what is left at the end, per call). Returns the last step's rows (one
    STATS row per written file group, as the Ray executor does). A pool whose workers use no CPU
    for ``stall_s`` seconds while units are pending is hung (a worker deadlocked, e.g. on a lock
    held at the fork): the run ends (:class:`WorkerDied`) instead of waiting for it."""
    import torch

    global _JOB
    cut = next((i for i, s in enumerate(chain.steps) if s.role == "write"), len(chain.steps))
    threads = torch.get_num_threads()
    # one intra-op thread from here on, in the driver and the workers it forks: torch then runs
    # its ops inline, and no OpenMP parallel region (which does not survive a fork) is ever entered
    torch.set_num_threads(1)
    try:
        _JOB = (chain.read, [(s, _bound(s)) for s in chain.steps[:cut]])
        gather = _Gather([(s, _bound(s)) for s in chain.steps[cut:]])
        for table in _unit_results(units, workers, stall_s):
            gather.take(table)
        gather.flush()
        return gather.rows
    finally:
        _JOB = None
        torch.set_num_threads(threads)


class _Gather:
    """The driver's end of the chain: rows taken from the workers, run through the gathered
    steps (the write) whenever the first one's ``batch_size`` rows are in."""

    def __init__(self, steps: list[tuple[Step, Callable]]) -> None:
        self.steps, self.size = steps, (steps[0][0].batch_size if steps else None)
        self.rows: list[dict] = []
        self.pending: list[pa.Table] = []
        self.n = 0

    def take(self, table: pa.Table | None) -> None:
        if table is not None:
            self.pending.append(table)
            self.n += table.num_rows
            if self.size and self.n >= self.size:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            out = _apply(self.steps, [pa.concat_tables(self.pending)])
            self.rows.extend(row for t in out for row in t.to_pylist())
        self.pending, self.n = [], 0


def _unit_results(units: list[Unit], workers: int, stall_s: float) -> Iterator[pa.Table | None]:
    """Each unit's rows from the worker steps, in the order they finish. A worker that dies
    (killed, out of memory, a native decoder's crash) ends the run at once (``BrokenProcessPool``),
    and so does a pool that stopped working (``stall_s`` without CPU); the workers left are
    killed, never waited for."""
    if workers <= 1 or len(units) <= 1:
        yield from map(_unit_rows, units)
        return
    largest_first = sorted(units, key=lambda u: (-u.size, u.uri))  # the last unit taken is a small one
    pool = ProcessPoolExecutor(min(workers, len(units)), mp_context=multiprocessing.get_context("fork"))
    try:
        pending = {pool.submit(_unit_rows, u) for u in largest_first}
        cpu, since = -1, time.monotonic()
        while pending:
            done, pending = wait(pending, timeout=min(10.0, stall_s / 3), return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
            now_cpu = _cpu_ticks(pool)
            if done or now_cpu != cpu:
                cpu, since = now_cpu, time.monotonic()
            elif time.monotonic() - since > stall_s:
                raise WorkerDied(
                    f"the local executor's workers did no work for {stall_s:.0f}s (--stall-timeout): hung; {ADVICE}"
                )
    except BrokenProcessPool:
        _kill(pool)
        raise WorkerDied(
            f"a worker process of the local executor died (killed, out of memory, or a crash in a native decoder); "
            f"{ADVICE}"
        ) from None
    except BaseException:  # hung, or the driver's own failure: the workers left are ended, not joined
        _kill(pool)
        raise
    pool.shutdown(wait=True)


def _kill(pool: ProcessPoolExecutor) -> None:
    for p in list((pool._processes or {}).values()):  # noqa: SLF001 -- the pool keeps no public handle
        p.kill()
    pool.shutdown(wait=True, cancel_futures=True)


ADVICE = "nothing of this run was published -- run it again, or with --executor ray"


def _cpu_ticks(pool: ProcessPoolExecutor) -> int:
    """The CPU time (clock ticks) the pool's workers used so far (Linux /proc; 0 elsewhere)."""
    total = 0
    for p in list((pool._processes or {}).values()):  # noqa: SLF001
        try:
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total


class WorkerDied(RuntimeError):
    """A local worker process ended without finishing its unit."""
