"""The Ray Data pipeline of one run and the resources it takes: read -> decode (CPU tasks) ->
detect/align/embed (the model actor pool, GPU or CPU) -> write (staged Parquet, CPU tasks).

The pipeline's steps around it (plan, publish, post-stages) are ``facepipe.pipeline``'s; the
stages' pure batch functions are their own modules'; this module only chooses resources and
connects them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from facepipe.actors import DetectActor, EmbedActor, FaceActor
from facepipe.decode import decode_batch
from facepipe.errors import UserError
from facepipe.flags import flag, positive_float, positive_int
from facepipe.io import writer
from facepipe.io.output import Output
from facepipe.io.tombstones import Tombstones, drop_erased_rows

if TYPE_CHECKING:
    from facepipe.pipeline import RunConfig


@dataclass(frozen=True)
class ComputeConfig:
    """Parallelism and resources.

    detect_actors_min/max: size bounds of the model actor pool; ``max`` None = one per unit of
    ``model_resource`` when it is set, else one per GPU when the cluster has GPUs, else as many
    as fill half the cluster's CPUs (the other half decodes and writes); ``min`` None = ``max``:
    a batch job keeps its whole pool busy from the start (a pool growing from one actor started
    the second seconds late, bench/RESULTS.md).
    cpus_per_detect_actor: CPU slots per model actor (None = 1 with a GPU, 0.5 on CPU-only
    clusters: measured faster than 1, see bench/RESULTS.md "actor layout").
    torch_threads: torch's intra-op threads per actor (None = the actor's CPU slots, at least 1).
    read_parallelism: read tasks (None = 2 per cluster CPU, at most one per input unit).
    decode_task_memory: bytes reserved per read+decode task (a decode call takes one read block:
    ``ReadConfig.rows_per_block`` images). rows_per_file: images per output file. embed_pool: see below.
    model_resource: a custom resource (``ray start --resources '{"NAME": N}'``) each model actor
    asks one unit of, so the pool lives on the nodes meant for it (say, GPU nodes of one kind).
    shared_paths: local paths are visible at the same place on every node; without it a local
    path on a multi-node cluster is refused (``facepipe.io.locality``).
    executor / local_max_bytes: where the pipeline runs (``facepipe.local`` says when Ray's
    start-up is not worth it).
    """

    detect_actors_min: int | None = flag(
        None,
        "--detect-actors",
        "minimum model actors (detect + align + embed; default: the maximum, a pool of fixed size)",
        type=positive_int,
    )
    detect_actors_max: int | None = flag(
        None,
        "--max-detect-actors",
        "maximum model actors (default: one per GPU, else enough to fill half the CPUs)",
        type=positive_int,
    )
    cpus_per_detect_actor: float | None = flag(
        None,
        "--cpus-per-actor",
        "CPU slots per model actor (default: 1 with a GPU, 0.5 on CPU-only clusters)",
        type=positive_float,
    )
    model_resource: str | None = flag(
        None,
        "--model-resource",
        "a custom Ray resource (ray start --resources) each model actor asks 1 of: the actors run only on "
        "the nodes that advertise it, one per unit (default: any node)",
    )
    shared_paths: bool = flag(
        False,
        "--shared-paths",
        "local input/output paths are mounted at the same place on every node (NFS, EFS, Lustre): use them on a "
        "multi-node cluster",
        action="store_true",
    )
    executor: str = flag(
        "auto",
        "--executor",
        "ray: a Ray Data pipeline (a local cluster unless --ray-address); local: worker processes on this machine, "
        "no Ray; auto: local for a small job on local paths with no cluster to join, else ray",
        choices=("auto", "ray", "local"),
    )
    #: --executor auto runs a job without Ray up to this many bytes of input (~2,000 ordinary photos):
    #: below it, Ray's ~12 s of start-up is most of the run (facepipe.local)
    local_max_bytes: int = 256 << 20
    torch_threads: int | None = None
    read_parallelism: int | None = None
    decode_task_memory: int = 1 << 30
    rows_per_file: int = flag(4096, "--rows-per-file", "images per output Parquet file", type=positive_int)
    #: Ray Data's target block size for the run. Its default (128 MiB) made one block of a read
    #: task's 50 photos, so an actor got 50 at once and the pool idled until whole blocks were
    #: decoded; 4 MiB keeps a few photos per block streaming (bench/RESULTS.md, issue 18).
    target_block_bytes: int = 4 << 20
    #: False (default): detect, align and embed in one actor pool. True: a second actor pool for
    #: align + embed (same resources per actor); see bench/RESULTS.md for the measured difference.
    embed_pool: bool = False


#: CPUs a write task asks for: none. The model actors' results are small blocks, which Ray keeps
#: in the driver's own memory (small task results are inlined at their owner) until a write takes
#: them; and a write that asked for a CPU waited for a read+decode task to end, as those hold
#: every CPU the actors leave. The driver grew ~0.6-0.9 KB an image that way, all run long
#: (bench/RESULTS.md, issue 20). A write is ~1% of the job's task time; on a head node started
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


def dataflow(cfg: RunConfig, out: Output, units: list, res: dict, tombstones: Tombstones) -> list[dict]:
    """Run :func:`pipeline_dataset`; returns one STATS row per written batch."""
    return pipeline_dataset(cfg, out, units, res, tombstones).take_all()


def pipeline_dataset(cfg: RunConfig, out: Output, units: list, res: dict, tombstones: Tombstones):
    """The Ray Data pipeline over ``units`` (lazy): read -> decode -> detect/align/embed -> staged
    Parquet, one STATS row per written batch. Erased images (``tombstones``) are dropped before
    decoding, erased faces before writing."""

    from facepipe.io.datasource import read_images

    c = cfg.compute
    # Read, drop erased rows and decode ask for the same resources, so Ray Data fuses them into one
    # task. Apart, a read task of a large tar shard (dozens of blocks) held the last free CPU while
    # it waited for a decode task to take its blocks -- a decode task that could never get a CPU:
    # the job hung (a 1,000-image shard on 2 CPUs, bench/scale.py). A full-resolution decode of a
    # large PNG/TIFF needs a few hundred MB; reserving it keeps the scheduler from packing decode
    # tasks into an OOM. It also makes these tasks' remote args differ from the actors', so Ray
    # does not fuse decoding into the detector actors (it fuses a task map into the next actor
    # map when their args are equal): decode runs in CPU tasks beside the actors.
    task = {"num_cpus": res["decode_cpus"], "memory": c.decode_task_memory}
    ds = read_images(units, cfg.read, res["read_parallelism"], **task)
    if tombstones.image_ids or tombstones.source_prefixes:
        ds = ds.map_batches(drop_erased_rows, fn_kwargs={"tombstones": tombstones}, batch_format="numpy", **task)
    # no batch_size: one read block per call (a batch size would stop Ray Data fusing it into the read)
    ds = ds.map_batches(decode_batch, fn_kwargs={"config": cfg.decode}, batch_size=None, batch_format="numpy", **task)
    ds = _models(ds, cfg, res)
    ds = ds.map_batches(
        writer.write_batch,
        fn_kwargs={"output": out, "run_id": cfg.run_id, "dt": cfg.dt, "erased_faces": tombstones.face_ids},
        batch_size=c.rows_per_file,
        batch_format="pyarrow",
        num_cpus=WRITE_CPUS,
    )
    return ds


def _models(ds, cfg: RunConfig, res: dict):
    """Decoded batches -> embedded rows through the model actor pool(s) (``facepipe.actors``)."""
    import ray.data

    threads = res["torch_threads"]

    def pool() -> dict:
        # A model actor that dies (its worker killed, its node lost) is restarted and the batches
        # it held are retried, without limit: Ray Data's defaults for actor pools (max_restarts
        # and max_task_retries -1), relied on and checked by tests/test_faults.py. A batch's
        # output goes to staging under a fresh name and only the driver publishes, so a retry
        # cannot duplicate rows. Decode tasks keep Ray's task default (3 retries).
        return dict(
            compute=ray.data.ActorPoolStrategy(min_size=res["detect_actors"][0], max_size=res["detect_actors"][1]),
            batch_size=cfg.detect.batch_size,
            **res["detect_actor_resources"],
        )

    if cfg.compute.embed_pool:
        ds = ds.map_batches(
            DetectActor,
            fn_constructor_kwargs={"detect": cfg.detect, "torch_threads": threads},
            batch_format="numpy",
            **pool(),
        )
        ds = ds.map_batches(
            EmbedActor,
            fn_constructor_kwargs={"embed": cfg.embed, "decode": cfg.decode, "torch_threads": threads},
            batch_format="pyarrow",
            **pool(),
        )
    else:
        kwargs = {"detect": cfg.detect, "embed": cfg.embed, "decode": cfg.decode, "torch_threads": threads}
        ds = ds.map_batches(FaceActor, fn_constructor_kwargs=kwargs, batch_format="numpy", **pool())
    return ds
