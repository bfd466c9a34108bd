"""The Ray executor: the extract chain (``facepipe.run.steps``) as a Ray Data pipeline, and the
resources it takes -- read and decode in CPU tasks, detect/align/embed in the model actor pool
(GPU or CPU), write into staging in tasks that ask for no CPU.

The run around it (plan, publish, post-stages) is ``facepipe.run.job``'s; the steps are declared
once in ``facepipe.run.steps``; this module only chooses resources and connects them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from facepipe.config import ComputeConfig
from facepipe.errors import ClusterStalled, UserError
from facepipe.run.steps import Chain, Step

#: CPUs a write task asks for: none. The model actors' results are small blocks, which Ray keeps
#: in the driver's own memory (small task results are inlined at their owner) until a write takes
#: them; and a write that asked for a CPU waited for a read+decode task to end, as those hold
#: every CPU the actors leave. The driver grew ~0.6-0.9 KB an image that way, all run long
#: (bench/RESULTS.md, "More than one node"). A write is ~1% of the job's task time; on a head node started
#: with ``--num-cpus 0`` writes may run too.
WRITE_CPUS = 0


def resources(compute: ComputeConfig) -> dict:
    """:func:`plan_resources` for the cluster Ray is connected to."""
    import ray

    res = ray.cluster_resources()
    slots = res.get(compute.model_resource, 0.0) if compute.model_resource else 0.0
    if compute.model_resource and slots < 1:
        raise UserError(
            f"--model-resource {compute.model_resource}: no node of the cluster advertises it "
            f"(ray start --resources '{{\"{compute.model_resource}\": N}}' on the nodes meant for the model actors)"
        )
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")] if compute.model_resource else []
    per_node = [(r.get("CPU", 0.0), r.get(compute.model_resource, 0.0)) for r in nodes]
    return plan_resources(compute, float(res.get("CPU", 1)), int(res.get("GPU", 0)), slots, per_node)


def alive_nodes() -> int:
    """Nodes of the connected Ray cluster that are alive now."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def plan_resources(
    compute: ComputeConfig, cpus: float, gpus: int, model_slots: float = 0.0, nodes: list[tuple[float, float]] = ()
) -> dict:
    """Actor pool size and resources, decode task CPUs and read parallelism for a cluster of
    ``cpus`` CPUs, ``gpus`` GPUs and ``model_slots`` units of ``compute.model_resource``.
    Whatever the size, a read or decode task (``decode_cpus``) fits beside the full actor pool
    (on a 1-CPU cluster a 1-CPU task never would: the job waited forever). ``nodes``: (CPUs,
    units of the model resource) of each node, when the model resource pins the actors to their
    nodes: a decode task then also fits beside them on each node they leave CPU on
    (:func:`_decode_cpus`)."""
    cpus = max(cpus, 1.0)
    pools = 2 if compute.embed_pool else 1
    if gpus:
        per = compute.cpus_per_detect_actor or 1.0
        max_actors = compute.detect_actors_max or gpus
        # two pools share each GPU (one actor of each per GPU); one pool owns it
        actor = {"num_gpus": 0.5 if compute.embed_pool else 1, "num_cpus": per}
    else:
        per = compute.cpus_per_detect_actor or min(0.5, cpus / 2 / pools)
        max_actors = compute.detect_actors_max or max(1, int(cpus / 2 / per / pools))
        actor = {"num_cpus": per}
    if compute.model_resource:  # one actor per unit (per pool), on the nodes that advertise it
        actor["resources"] = {compute.model_resource: 1.0 / pools}
        max_actors = compute.detect_actors_max or max(1, int(model_slots))
    free = cpus - actor["num_cpus"] * max_actors * pools
    return {
        "cluster_cpus": int(cpus),
        "cluster_gpus": gpus,
        "decode_cpus": _decode_cpus(free, [c - s * pools * actor["num_cpus"] for c, s in nodes]),
        "detect_actors": [min(compute.detect_actors_min or max_actors, max_actors), max_actors],
        "detect_actor_resources": actor,
        "torch_threads": compute.torch_threads or max(1, int(per)),
        "read_parallelism": compute.read_parallelism or 2 * int(cpus),
    }


def _decode_cpus(free: float, node_free: list[float]) -> float:
    """CPUs a read+decode task asks for: 1 where the actors leave that much, else what they leave
    (at least 0.25) -- on the cluster as a whole, and on each node that keeps >= 0.25 CPU beside
    its model actors (``node_free``). A node whose actors left it 0.5 CPU ran no decode task at
    all when tasks asked for 1: 3 one-CPU nodes, two with a 0.5-CPU model actor, decoded on the
    head alone (tests/test_multinode.py saw every task on one node)."""
    usable = [f for f in node_free if f >= 0.25]
    return min(1.0, max(0.25, free), *usable)


log = logging.getLogger(__name__)


def run_chain(chain: Chain, compute: ComputeConfig, units: list, res: dict) -> list[dict]:
    """Run :func:`chain_dataset`; returns one STATS row per written batch. A run that makes no
    progress for ``compute.stall_timeout_s`` ends with :class:`ClusterStalled` (:func:`watched_rows`)."""
    return watched_rows(chain_dataset(chain, compute, units, res), compute.stall_timeout_s)


#: how often the driver looks at Ray Data's counters while it waits for the next row
POLL_S = 10.0


def watched_rows(ds: Any, stall_s: float) -> list[dict]:
    """Every row of ``ds``, with a liveness check on the wait: Ray Data itself waits forever for a
    task that cannot be scheduled (resources no node offers, a lost node never replaced) or an
    actor that hangs. Progress is a row out, or a task finished or a block produced by any
    operator (Ray Data's own counters, :func:`_progress`); none for ``stall_s`` seconds stops the
    execution and raises :class:`ClusterStalled` (exit 3, nothing published).

    The rows are taken in a thread of their own, so the wait can be bounded from here."""
    q: queue.Queue = queue.Queue()

    def take() -> None:
        try:
            for row in ds.iter_rows():
                q.put(("row", row))
            q.put(("end", None))
        except BaseException as e:  # noqa: BLE001 -- handed to the driver's thread, raised there
            q.put(("error", e))

    threading.Thread(target=take, name="facepipe-extract-rows", daemon=True).start()
    rows: list[dict] = []
    seen, since = _progress(), time.monotonic()
    while True:
        try:
            kind, item = q.get(timeout=min(POLL_S, stall_s))
        except queue.Empty:
            now = _progress()
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since > stall_s:
                busy = _active_tasks()
                _stop_executions()
                raise ClusterStalled(
                    f"no progress for {stall_s:.0f}s (--stall-timeout): no task of the pipeline finished and no "
                    f"batch was written{'; still running or waiting: ' + busy if busy else ''} -- a task waits for "
                    "resources no node offers, a node was lost and not replaced, or a task hung"
                ) from None
            continue
        if kind == "row":
            rows.append(item)
            since = time.monotonic()
        elif kind == "error":
            raise item
        else:
            return rows


def _executors() -> list:
    """Ray Data's streaming executors running in this process (each is a thread of the driver)."""
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    return [t for t in threading.enumerate() if isinstance(t, StreamingExecutor)]


def _progress() -> int:
    """Tasks finished plus blocks produced so far by every operator of the running executions:
    Ray Data's per-operator metrics (internal to Ray; ``ray`` is pinned, and
    tests/run/test_ray_executor.py sees them move). 0 when they cannot be read -- the rows out
    remain the only progress then."""
    total = 0
    try:
        for ex in _executors():
            for op in list(ex._topology or {}):  # noqa: SLF001
                total += op.metrics.num_tasks_finished + op.metrics.num_task_outputs_generated
    except (AttributeError, TypeError, RuntimeError) as e:
        log.debug("Ray Data's progress counters unreadable: %s", e)
        return 0
    return total


def _active_tasks() -> str:
    """What each operator still runs, as one line ("MapBatches(FaceActor): 2 tasks")."""
    parts = []
    try:
        for ex in _executors():
            for op in list(ex._topology or {}):  # noqa: SLF001
                n = op.num_active_tasks()
                if n:
                    parts.append(f"{op.name}: {n} task{'s' if n > 1 else ''}")
    except (AttributeError, TypeError, RuntimeError):
        return ""
    return ", ".join(parts)


def _stop_executions() -> None:
    """Shut Ray Data's running executions down (their tasks cancelled, actors killed)."""
    for ex in _executors():
        try:
            ex.shutdown(force=True)
        except Exception as e:  # noqa: BLE001 -- best effort on the way out; the run fails anyway
            log.debug("could not shut a Ray Data execution down: %s", e)


def chain_dataset(chain: Chain, compute: ComputeConfig, units: list, res: dict):
    """The extract chain (``facepipe.run.steps``) over ``units`` as a Ray Data pipeline (lazy):
    the read a datasource, each step a ``map_batches`` with the resources its role takes."""
    from facepipe.stages.read.datasource import read_images

    # Read, drop erased rows and decode (role "cpu") ask for the same resources, so Ray Data fuses
    # them into one task. Apart, a read task of a large tar shard (dozens of blocks) held the last
    # free CPU while it waited for a decode task to take its blocks -- a decode task that could
    # never get a CPU: the job hung (a 1,000-image shard on 2 CPUs, bench/speed/scale.py). A
    # full-resolution decode of a large PNG/TIFF needs a few hundred MB; reserving it keeps the
    # scheduler from packing decode tasks into an OOM. It also makes these tasks' remote args
    # differ from the actors', so Ray does not fuse decoding into the detector actors (it fuses a
    # task map into the next actor map when their args are equal): decode runs in CPU tasks
    # beside the actors. (No batch size on them: one read block per call; a batch size would
    # stop Ray Data fusing them into the read.)
    task = {"num_cpus": res["decode_cpus"], "memory": compute.decode_task_memory}
    ds = read_images(units, chain.read, res["read_parallelism"], **task)
    for step in chain.steps:
        if step.is_class:
            args = {"fn_constructor_kwargs": {**step.kwargs, "torch_threads": res["torch_threads"]}}
        else:
            args = {"fn_kwargs": step.kwargs}
        ds = ds.map_batches(
            step.fn, batch_size=step.batch_size, batch_format=step.batch_format, **args, **_resources(step, res, task)
        )
    return ds


def _resources(step: Step, res: dict, task: dict) -> dict:
    """What a step's role asks of Ray."""
    if step.role == "cpu":
        return task
    if step.role == "write":
        return {"num_cpus": WRITE_CPUS}
    import ray.data

    # A model actor that dies (its worker killed, its node lost) is restarted and the batches it
    # held are retried, without limit: Ray Data's defaults for actor pools (max_restarts and
    # max_task_retries -1), relied on and checked by tests/test_faults.py. A batch's output goes
    # to staging under a fresh name and only the driver publishes, so a retry cannot duplicate
    # rows. Decode tasks keep Ray's task default (3 retries).
    low, high = res["detect_actors"]
    return {"compute": ray.data.ActorPoolStrategy(min_size=low, max_size=high), **res["detect_actor_resources"]}
