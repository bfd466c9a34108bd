"""The run's pipeline without Ray, for a small job on one machine.

Starting a local Ray cluster, Ray Data's executor and a model actor per core costs a run ~12 s
before the first photo is embedded, and shutting it down ~1.5 s more: two thirds of a 200-photo
run (bench/RESULTS.md, "Speed on ordinary photos"). A run with no cluster to join, local paths
only and little input (``ComputeConfig.local_max_bytes``) skips all of that: the driver builds
the model actor once, forks one worker process per core (they share its loaded models), and the
workers take input units from a queue as they finish -- read, erased rows dropped, decode,
detect, align, embed: the same stage functions, in the same order, as the Ray pipeline
(``facepipe.dataflow``). The driver writes the rows into the run's staging prefix with the same
writer. Same tables as a Ray run (``tests/test_local.py``); which rows share a file differs.

Not for large or remote runs: a worker that dies ends the run (Ray would restart it), and
inputs on S3 stay with Ray (the AWS SDK's state does not survive a fork).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from facepipe.decode import decode_batch
from facepipe.errors import UserError
from facepipe.io import writer
from facepipe.io.fs import is_s3
from facepipe.io.output import Output
from facepipe.io.sources import Unit, read_units
from facepipe.io.tombstones import Tombstones, drop_erased_rows

if TYPE_CHECKING:
    from facepipe.actors import FaceActor
    from facepipe.pipeline import RunConfig

#: what the forked workers inherit from the driver: (config, model actor, tombstones)
_JOB: tuple[RunConfig, FaceActor, Tombstones] | None = None


def local_possible(cfg: RunConfig, ray_address: str | None) -> bool:
    """Whether this run may go without Ray: ``--executor local``, or ``auto`` with no cluster to
    join (no address, none in RAY_ADDRESS, not connected already) and only local paths."""
    if cfg.compute.executor == "ray":
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


def local_cpus() -> int:
    """The CPUs this process may run on (taskset, a cgroup cpuset), as a local Ray cluster gets."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """A table as the numpy batch Ray Data hands a ``batch_format="numpy"`` function."""
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _embed_unit(unit: Unit) -> pa.Table | None:
    """One unit through read -> drop erased -> decode -> detect/align/embed (in a worker)."""
    cfg, actor, tombstones = _JOB
    out = []
    erasing = bool(tombstones.image_ids or tombstones.source_prefixes)
    for block in read_units([unit], cfg.read):
        batch = _numpy(block)
        if erasing:
            batch = drop_erased_rows(batch, tombstones)
        decoded = decode_batch(batch, cfg.decode)  # one read block per call, as in the Ray pipeline
        for t in range(0, decoded.num_rows, cfg.detect.batch_size):
            out.append(actor(_numpy(decoded.slice(t, cfg.detect.batch_size))))
    return pa.concat_tables(out) if out else None


def run_local(cfg: RunConfig, out: Output, units: list[Unit], tombstones: Tombstones, workers: int) -> list[dict]:
    """The pipeline over ``units`` in ``workers`` forked processes; returns one STATS row per
    written file group (as the Ray pipeline does)."""
    import torch

    from facepipe.actors import FaceActor

    global _JOB
    threads = torch.get_num_threads()
    # one intra-op thread from here on, in the driver and the workers it forks: torch then runs
    # its ops inline, and no OpenMP parallel region (which does not survive a fork) is ever entered
    torch.set_num_threads(1)
    try:
        _JOB = (cfg, FaceActor(cfg.detect, cfg.embed, cfg.decode, torch_threads=1), tombstones)
        rows, pending, n = [], [], 0

        def flush() -> None:
            nonlocal pending, n
            if pending:
                table = pa.concat_tables(pending)
                rows.extend(writer.write_batch(table, out, cfg.run_id, cfg.dt, tombstones.face_ids).to_pylist())
            pending, n = [], 0

        def take(table: pa.Table | None) -> None:
            nonlocal n
            if table is not None:
                pending.append(table)
                n += table.num_rows
                if n >= cfg.compute.rows_per_file:
                    flush()

        if workers <= 1 or len(units) <= 1:
            for u in units:
                take(_embed_unit(u))
        else:
            largest_first = sorted(units, key=lambda u: (-u.size, u.uri))  # the last unit taken is a small one
            with multiprocessing.get_context("fork").Pool(min(workers, len(units))) as pool:
                for table in pool.imap_unordered(_embed_unit, largest_first, chunksize=1):
                    take(table)
        flush()
        return rows
    finally:
        _JOB = None
        torch.set_num_threads(threads)
