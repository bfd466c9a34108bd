"""One run of the job, in four steps, each a function of its own:

1. :func:`plan` -- list the inputs (tombstoned ones left out) and plan them against the output's
   state: what is new or changed, what is already there (``run.state``);
2. :func:`extract` -- the extract chain (``facepipe.run.steps``: read -> decode ->
   detect/align/embed -> write) over the planned units into the run's staging prefix, by the Ray
   executor or, for a small local job, the local one;
3. :func:`publish` -- move the staged files into the tables, purge changed units' earlier rows,
   record the state;
4. :func:`post_stages` -- outlier scores of the run's faces, then identities over the archive.

:func:`run` does them in order after ``facepipe.run.startup`` (the request checked, the models built
while Ray starts) and writes ``_runs/RUN_ID.json`` last.
Stages never import this module.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from facepipe import __version__
from facepipe.config import RunConfig, to_dict
from facepipe.run import local_executor, ray_executor
from facepipe.run import state as shard_state
from facepipe.run.local_executor import local_cpus, local_workers, worth_ray
from facepipe.run.manifest import Counts, RunManifest, Timing, write_manifest
from facepipe.run.ray_logs import quiet_known_ray_errors
from facepipe.run.startup import checked_and_connected, connect
from facepipe.run.steps import extract_chain
from facepipe.stages.cluster.stage import run_cluster
from facepipe.stages.read.inventory import manifest_units
from facepipe.stages.read.sources import list_units
from facepipe.stages.score.stage import run_score
from facepipe.stages.write import BatchStats
from facepipe.storage import lease
from facepipe.storage.output import Output
from facepipe.storage.tombstones import Tombstones, load_tombstones

log = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    import numpy
    import pyarrow
    import ray
    import torch

    return {
        "facepipe": __version__,
        "python": platform.python_version(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
    }


@dataclass
class RunPlan:
    """What a run will do: the listed input units (erased ones left out) and the plan against
    the output's state (what to process, skip, replace)."""

    output: Output  # built once here, with its encryption setting, and passed to every stage
    units: list
    todo: shard_state.Plan
    tombstones: Tombstones
    list_s: float


def plan(cfg: RunConfig, out: Output) -> RunPlan:
    """List the inputs (erased prefixes never read again) and plan them against the state."""
    t0 = time.perf_counter()
    tombstones = load_tombstones(out)
    listed = list_units(list(cfg.inputs)) if cfg.inputs else []
    if cfg.read.manifest:
        listed = sorted(set(listed) | set(manifest_units(cfg.read.manifest)), key=lambda u: u.uri)
    units = [u for u in listed if not tombstones.covers_uri(u.uri)]
    todo = shard_state.plan(units, shard_state.load(out, units), cfg.run_id, cfg.full)
    p = RunPlan(out, units, todo, tombstones, time.perf_counter() - t0)
    log.info(
        "listed %d input units in %.1fs: %d to process, %d already in the output (%d of them changed)",
        len(units), p.list_s, len(todo.todo), len(todo.skipped), len(todo.replaced),
    )  # fmt: skip
    return p


def extract(cfg: RunConfig, p: RunPlan) -> tuple[BatchStats, dict, float]:
    """The extract chain over the planned units as a Ray Data pipeline, into the run's staging prefix (Ray is up);
    returns the batch totals, the resources chosen and the seconds it took."""
    import ray.data

    t0 = time.perf_counter()
    if not log.isEnabledFor(logging.INFO):  # Ray Data's per-dataset INFO lines, unless -v
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
    ctx.target_max_block_size = cfg.compute.target_block_bytes
    res = {"executor": "ray", **ray_executor.resources(cfg.compute)}
    p.output.clear_staging(cfg.run_id)
    chain = extract_chain(cfg, p.output, p.tombstones)
    with quiet_known_ray_errors():  # Ray Data's own actor-pool false alarm (facepipe.run.ray_logs)
        # nothing new: no dataset at all
        rows = ray_executor.run_chain(chain, cfg.compute, p.todo.todo, res) if p.todo.todo else []
    return BatchStats.total([BatchStats.from_row(r) for r in rows]), res, time.perf_counter() - t0


def extract_local(cfg: RunConfig, p: RunPlan) -> tuple[BatchStats, dict, float]:
    """:func:`extract` without Ray: worker processes on this machine (``facepipe.run.local_executor``)."""
    t0 = time.perf_counter()
    workers = local_workers(cfg, p.todo.todo)
    p.output.clear_staging(cfg.run_id)
    chain = extract_chain(cfg, p.output, p.tombstones)
    rows = local_executor.run_chain(chain, p.todo.todo, workers, cfg.compute.stall_timeout_s) if p.todo.todo else []
    res = {"executor": "local", "cluster_cpus": local_cpus(), "workers": workers, "torch_threads": 1}
    return BatchStats.total([BatchStats.from_row(r) for r in rows]), res, time.perf_counter() - t0


def publish(cfg: RunConfig, p: RunPlan, totals: BatchStats, counts: Counts) -> None:
    """Move the staged files into the tables, purge changed units' earlier rows, record the state
    (last: a crash before it makes the rerun process these units again). Adds what it did to ``counts``."""
    replaced = p.output.publish(cfg.run_id, totals.files)
    if any(replaced.values()):
        log.info("replaced files of an earlier attempt of run %s: %s", cfg.run_id, replaced)
    purged = shard_state.purge(p.output, p.todo.replaced, keep_run=cfg.run_id)
    retry = shard_state.units_of(totals.unreadable, p.todo.todo)
    shard_state.record(p.output, cfg.run_id, cfg.dt, p.todo.todo, retry, p.todo.damaged)
    counts.rows_purged, counts.units_to_retry = purged, sorted(retry)


def post_stages(cfg: RunConfig, out: Output, m: RunManifest) -> None:
    """The final stages on the published run: outlier scores of its faces, then identities over
    the whole archive. Each adds its summary and its seconds to the manifest."""
    if cfg.score.enabled:
        t0 = time.perf_counter()
        # no error of the request is left by now (startup checked --drocc-model): a failure here is the
        # job's own or its storage's, reported as such (exit 1 with its traceback, or 3)
        m.score = run_score(out, cfg.dt, cfg.run_id, cfg.score, only_run=cfg.run_id)
        m.timing.score_s = round(time.perf_counter() - t0, 3)
    if cfg.cluster.enabled:
        t0 = time.perf_counter()
        m.cluster = run_cluster(out, cfg.dt, cfg.run_id, cfg.cluster)
        m.timing.cluster_s = round(time.perf_counter() - t0, 3)


def cores_busy(stage_task_s: dict[str, float], seconds: float) -> float | None:
    """How many cores the stages kept busy on average: their task seconds over the pipeline's
    wall time (Ray, when used, was up before it; the workers' start is included, so a short run
    shows its fixed cost)."""
    return round(sum(stage_task_s.values()) / seconds, 2) if seconds > 0 else None


def _manifest(
    cfg: RunConfig,
    ids: tuple[str, str],
    p: RunPlan,
    totals: BatchStats,
    res: dict,
    pipeline_s: float,
    ray_start_s: float | None,
) -> RunManifest:
    ok = totals.status_counts.get("ok", 0)
    counts = Counts(
        input_units=len(p.units),
        units_processed=len(p.todo.todo),
        units_skipped=len(p.todo.skipped),
        units_replaced=len(p.todo.replaced),
        images=totals.n_images,
        images_ok=ok,
        images_failed=totals.n_images - ok,
        failures_by_status={k: v for k, v in sorted(totals.status_counts.items()) if k != "ok"},
        faces=totals.n_faces,
    )
    timing = Timing(
        list_s=round(p.list_s, 3),
        pipeline_s=round(pipeline_s, 3),
        stage_task_s=totals.stage_s,
        images_per_s=round(totals.n_images / pipeline_s, 2) if pipeline_s > 0 else None,
        ray_start_s=round(ray_start_s, 3) if ray_start_s is not None else None,
        cores_busy=cores_busy(totals.stage_s, pipeline_s),
    )
    return RunManifest(
        run_id=cfg.run_id,
        dt=cfg.dt,
        inputs=list(cfg.inputs),
        output=cfg.output,
        detector=ids[0],
        embedder=ids[1],
        config=to_dict(cfg),  # facepipe run --like reads it back
        counts=counts,
        timing=timing,
        resources=res,
        files={t: sorted(f for f in totals.files if f.startswith(f"{t}/")) for t in ("images", "faces")},
        versions=_versions(),
    )


def run(cfg: RunConfig, ray_address: str | None = None) -> RunManifest:
    """Run the job -- plan, extract, publish, post-stages -- and return the run manifest, also
    written last to ``OUT/_runs/RUN_ID.json``."""
    cfg = cfg.resolved()
    ids, out, ray_start_s = checked_and_connected(cfg, ray_address)
    with lease.held(out, f"facepipe run {cfg.run_id}"):  # one writer at a time (facepipe.storage.lease)
        out.recover()  # a publish a crashed writer left half done, finished first
        return _run(cfg, ids, out, ray_address, ray_start_s)


def _run(cfg: RunConfig, ids: tuple[str, str], out: Output, ray_address: str | None, ray_start_s: float | None):
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    p = plan(cfg, out)
    if ray_start_s is None and worth_ray(cfg, p.todo.todo):  # a local job large enough for Ray after all
        ray_start_s = connect(cfg, ray_address)
    totals, res, pipeline_s = extract(cfg, p) if ray_start_s is not None else extract_local(cfg, p)
    m = _manifest(cfg, ids, p, totals, res, pipeline_s, ray_start_s)
    m.started_at = started.isoformat(timespec="seconds")
    t_pub = time.perf_counter()
    publish(cfg, p, totals, m.counts)
    m.timing.publish_s = round(time.perf_counter() - t_pub, 3)
    post_stages(cfg, p.output, m)
    m.timing.wall_s = round(time.perf_counter() - t0, 3)
    m.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_manifest(p.output, m)
    return m
