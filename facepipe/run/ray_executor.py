"""The Ray executor: the extract chain (``facepipe.run.steps``) as a Ray Data pipeline, and the
resources it takes -- read and decode in CPU tasks, detect/align/embed in the model actor pool
(GPU or CPU), write into staging in tasks that ask for no CPU.

The run around it (plan, publish, post-stages) is ``facepipe.run.job``'s; the steps are declared
once in ``facepipe.run.steps``; this module only chooses resources and connects them.
"""

from __future__ import annotations

from facepipe.config import ComputeConfig
from facepipe.errors import UserError
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
    return plan_resources(compute, float(res.get("CPU", 1)), int(res.get("GPU", 0)), slots)


def alive_nodes() -> int:
    """Nodes of the connected Ray cluster that are alive now."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def plan_resources(compute: ComputeConfig, cpus: float, gpus: int, model_slots: float = 0.0) -> dict:
    """Actor pool size and resources, decode task CPUs and read parallelism for a cluster of
    ``cpus`` CPUs, ``gpus`` GPUs and ``model_slots`` units of ``compute.model_resource``.
    Whatever the size, a read or decode task (``decode_cpus``) fits beside the full actor pool
    (on a 1-CPU cluster a 1-CPU task never would: the job waited forever)."""
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
        "decode_cpus": min(1.0, max(0.25, free)),
        "detect_actors": [min(compute.detect_actors_min or max_actors, max_actors), max_actors],
        "detect_actor_resources": actor,
        "torch_threads": compute.torch_threads or max(1, int(per)),
        "read_parallelism": compute.read_parallelism or 2 * int(cpus),
    }


def run_chain(chain: Chain, compute: ComputeConfig, units: list, res: dict) -> list[dict]:
    """Run :func:`chain_dataset`; returns one STATS row per written batch."""
    return chain_dataset(chain, compute, units, res).take_all()


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
