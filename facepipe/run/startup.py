"""A run's start: the request checked, the models built and Ray up -- at the same time, since one
is the driver's CPU and the other is waiting on a cluster's processes -- and the output opened
once the paths are known to be readable by every node. ``facepipe.run.job`` runs it first."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING

from facepipe.errors import UserError
from facepipe.registry import create_model
from facepipe.run.ray_executor import alive_nodes
from facepipe.stages.align.stage import resolve_method
from facepipe.stages.cluster import corrections
from facepipe.stages.score.stage import load_model
from facepipe.storage import crypto
from facepipe.storage import fs as fsio
from facepipe.storage.locality import check_paths_for_cluster
from facepipe.storage.output import Output

if TYPE_CHECKING:
    from facepipe.config import RunConfig


def validate_run_id(run_id: str) -> None:
    if not run_id or not all(c.isalnum() or c in "-_." for c in run_id) or run_id.startswith("."):
        raise UserError(f"run id {run_id!r} must be letters, digits, '-', '_' or '.'")


def validate_inputs(cfg: RunConfig) -> None:
    """Inputs named, in a scheme we read, local ones present: checked before Ray starts (a typo
    costs no cluster start). Listing them is the plan's (s3:// prefixes too)."""
    if not cfg.inputs and not cfg.read.manifest:
        raise UserError("no inputs: name INPUT paths (folders, files, s3:// prefixes) or --input-manifest FILE")
    for uri in cfg.paths()[:-1]:  # not the output
        try:
            _, path = fsio.resolve(uri)
        except ValueError as e:
            raise UserError(str(e)) from None
        if not fsio.is_s3(uri) and not os.path.exists(path):
            raise UserError(f"input {uri} does not exist")


def validate_dt(dt: str) -> None:
    try:
        datetime.strptime(dt, "%Y-%m-%d")
    except ValueError:
        raise UserError(f"--dt {dt!r} is not a date of the form YYYY-MM-DD") from None


def ensure_ray(address: str | None = None) -> float:
    """Connect to Ray (``address``, else ``RAY_ADDRESS``), or start a local cluster; returns the
    seconds it took (0 when already connected)."""
    import ray

    if ray.is_initialized():
        return 0.0
    t0 = time.perf_counter()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:  # a local cluster of the CPUs this process may run on (taskset, a cgroup cpuset), not all the machine's
        from facepipe.run.local_executor import local_cpus

        cpus = local_cpus()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    return time.perf_counter() - t0


def preflight(cfg: RunConfig) -> tuple[str, str]:
    """Fail before any cluster work: both models built once on CPU (seconds: torch's import and
    the weights), the align method, a DROCC model to reuse. Returns (detector id, embedder id)."""
    try:
        detector_id = create_model(
            cfg.detect.name, cfg.detect.weights, kind="detector", config=cfg.detect.config
        ).model_id
        embedder = create_model(cfg.embed.name, cfg.embed.weights, kind="embedder")
        resolve_method(cfg.embed.align.method, embedder.chip)
        if cfg.score.enabled and cfg.score.model:  # a typo fails now, not after hours of extraction
            load_model(cfg.score.model)
    except (KeyError, FileNotFoundError, ValueError) as e:
        raise UserError(e.args[0] if e.args else str(e)) from None
    return detector_id, embedder.model_id


def open_output(cfg: RunConfig) -> Output:
    """The run's output, with the encryption setting it records from now on (the first run's);
    its human corrections readable (``facepipe.stages.cluster.corrections``)."""
    try:
        out = Output(cfg.output, crypto.ensure_output(cfg.output, cfg.encryption))
        if cfg.cluster.enabled:  # corrections a person wrote by hand: a bad file fails now, not after extraction
            corrections.load(out)
        return out
    except ValueError as e:  # CorrectionError too
        raise UserError(str(e)) from None


def connect(cfg: RunConfig, ray_address: str | None) -> float:
    """Connect to Ray or start a local cluster (:func:`ensure_ray`), then refuse local paths the
    cluster's nodes could not all read (``facepipe.storage.locality``); returns the seconds it took."""
    ray_start_s = ensure_ray(ray_address)
    client = (ray_address or os.environ.get("RAY_ADDRESS", "")).startswith("ray://")
    check_paths_for_cluster(cfg.paths(), alive_nodes(), client, cfg.compute.shared_paths)
    return ray_start_s


def checked_and_connected(cfg: RunConfig, ray_address: str | None) -> tuple[tuple[str, str], Output, float | None]:
    """The run id, date and inputs checked, then :func:`preflight` -- with Ray started meanwhile
    when the run will need it: a local cluster's start is seconds of waiting on its processes,
    building the models is seconds of the driver's CPU, so the models are built in a thread
    while ``ray.init`` runs in the main thread (it must: it sets signal handlers). A bad run id
    starts nothing; a model that fails to build is reported once Ray is up (the process exit stops
    it). A run that may go without Ray (``facepipe.run.local_executor``) starts nothing yet: the plan decides.
    The output is touched only after that. Returns the model ids, the output and the seconds Ray
    took to come up (None: not started)."""
    from facepipe.run.local_executor import local_possible

    validate_run_id(cfg.run_id)
    validate_dt(cfg.dt)
    validate_inputs(cfg)
    if local_possible(cfg, ray_address):
        return preflight(cfg), open_output(cfg), None
    with ThreadPoolExecutor(1, thread_name_prefix="facepipe-preflight") as pool:
        checks = pool.submit(preflight, cfg)
        try:
            ray_start_s = connect(cfg, ray_address)
        finally:
            ids = checks.result()  # its UserError first: it is the user's to fix
    return ids, open_output(cfg), ray_start_s
