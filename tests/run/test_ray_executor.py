"""The pipeline's resource plan: on any cluster size a decode task fits beside the whole model
actor pool (a 1-CPU cluster once waited forever: its pool held half the CPU, decode asked for 1)."""

import pytest

from facepipe.config import ComputeConfig
from facepipe.run.ray_executor import plan_resources


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 16, 96])
@pytest.mark.parametrize("embed_pool", [False, True])
def test_a_decode_task_always_fits_beside_the_actor_pool(cpus, embed_pool):
    r = plan_resources(ComputeConfig(embed_pool=embed_pool), cpus, 0)
    pools = 2 if embed_pool else 1
    lo, hi = r["detect_actors"]
    assert lo == hi >= 1, "a fixed-size pool: every actor starts with the job"
    held = hi * r["detect_actor_resources"]["num_cpus"] * pools
    assert held + r["decode_cpus"] <= cpus
    assert r["decode_cpus"] > 0 and (cpus < 2 or r["decode_cpus"] == 1.0)


def test_gpu_clusters_get_one_actor_per_gpu():
    r = plan_resources(ComputeConfig(), 16, 4)
    assert r["detect_actors"] == [4, 4] and r["detect_actor_resources"] == {"num_gpus": 1, "num_cpus": 1.0}
    assert r["decode_cpus"] == 1.0


def test_the_user_bounds_the_pool():
    r = plan_resources(ComputeConfig(detect_actors_min=1, detect_actors_max=3, cpus_per_detect_actor=1.0), 8, 0)
    assert r["detect_actors"] == [1, 3] and r["torch_threads"] == 1


def test_a_model_resource_pins_one_actor_per_unit_to_the_nodes_that_advertise_it():
    r = plan_resources(ComputeConfig(model_resource="inference"), 12, 0, model_slots=3)
    assert r["detect_actors"] == [3, 3]
    assert r["detect_actor_resources"] == {"num_cpus": 0.5, "resources": {"inference": 1.0}}
    two = plan_resources(ComputeConfig(model_resource="inference", embed_pool=True), 12, 0, model_slots=3)
    assert two["detect_actor_resources"]["resources"] == {"inference": 0.5}, "a detect and an embed actor per unit"


@pytest.mark.parametrize(
    "nodes",
    [
        [(1, 0), (1, 1), (1, 1)],  # tests/test_multinode.py's cluster: decode on all three nodes
        [(16, 0), (16, 1), (16, 1)],
        [(4, 0), (2, 4)],  # a model node the actors fill: no decode there
        [(8, 2), (1.5, 1), (0, 0)],  # a head with no CPUs
    ],
)
@pytest.mark.parametrize("embed_pool", [False, True])
def test_a_decode_task_fits_beside_the_model_actors_on_every_node_they_leave_cpu_on(nodes, embed_pool):
    cfg = ComputeConfig(model_resource="inference", embed_pool=embed_pool)
    cpus, slots = sum(c for c, _ in nodes), sum(s for _, s in nodes)
    r = plan_resources(cfg, cpus, 0, model_slots=slots, nodes=nodes)
    actor_cpus = r["detect_actor_resources"]["num_cpus"] * (2 if embed_pool else 1)
    left = [c - s * actor_cpus for c, s in nodes]
    assert all(f >= r["decode_cpus"] for f in left if f >= 0.25), (left, r["decode_cpus"])
    assert r["decode_cpus"] == min(1.0, *(f for f in left if f >= 0.25)), "no smaller than it must be"


def test_a_model_resource_no_node_advertises_is_a_user_error(ray_cluster):
    from facepipe.errors import UserError
    from facepipe.run.ray_executor import resources

    with pytest.raises(UserError, match="no node of the cluster advertises it"):
        resources(ComputeConfig(model_resource="no_such_slot"))


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_the_job_runs_to_the_end_on_one_core(photos, tmp_path):
    """`facepipe run` confined to one core (its own local Ray cluster sees 1 CPU) finishes and
    writes every image; it used to wait forever for a 1-CPU read task beside the actor pool."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from testbed.procs import REPO, end, own_processes

    src = tmp_path / "in"
    src.mkdir()
    for name in ("obama.jpg", "biden.jpg", "t1.jpg", "grace_hopper.jpg"):
        shutil.copy(photos[name], src / name)
    ray_tmp = tempfile.mkdtemp(prefix="fp1c", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_tmp}
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facepipe.cli",
            "run",
            str(src),
            "--output",
            str(tmp_path / "out"),
            "--no-score",
            "--executor",
            "ray",  # the Ray pipeline's layout is what this protects (a small job would go local)
        ],  # fmt: skip
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    try:
        out, _ = p.communicate(timeout=300)
    finally:
        end(own_processes(p.pid, ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert p.returncode == 0, out[-3000:]
    assert "images    4 (4 ok, 0 failed)" in out and "of 1 busy with the stages' tasks" in out, out


def _dataset(photos, tmp_path, tombstones):
    """The job's extract chain for one photo as the Ray executor builds it (lazy)."""
    from facepipe.config import RunConfig
    from facepipe.run.ray_executor import chain_dataset, resources
    from facepipe.run.steps import extract_chain
    from facepipe.stages.read.sources import list_units
    from facepipe.storage.output import Output

    cfg = RunConfig(inputs=(str(photos["obama.jpg"]),), output=str(tmp_path), run_id="plan", dt="2026-11-01")
    chain = extract_chain(cfg, Output(str(tmp_path), None), tombstones)
    return chain_dataset(chain, cfg.compute, list_units(list(cfg.inputs)), resources(cfg.compute))


@pytest.mark.parametrize("erased", [False, True])
def test_reading_dropping_erased_rows_and_decoding_are_one_fused_task(ray_cluster, photos, tmp_path, capsys, erased):
    """Ray Data fuses read -> drop erased -> decode into one task. Apart, a read task of a large
    tar shard held the last CPU the model actors left while it waited for a decode task to take
    its blocks -- a decode task that could not be scheduled: the 10^5-image run (bench/speed/scale.py,
    1,000-image shards from S3, 2 CPUs) hung. A batch size on decode, or other resources than the
    read's, would stop the fusion."""
    from facepipe.storage.tombstones import Tombstones

    tomb = Tombstones(image_ids=frozenset({"0" * 32})) if erased else Tombstones()
    ds = _dataset(photos, tmp_path, tomb)
    ds.explain()
    physical = capsys.readouterr().out.split("Physical Plan (Optimized)")[1]
    fused = (
        "ReadImageArchive->MapBatches(drop_erased_rows)->MapBatches(decode_batch)"
        if erased
        else ("ReadImageArchive->MapBatches(decode_batch)")
    )
    assert f"TaskPoolMapOperator[{fused}]" in physical, physical


def test_the_write_asks_for_no_cpu_so_it_never_waits_behind_decoding(ray_cluster, photos, tmp_path):
    """The write is the pipeline's sink: until it takes the model actors' results, Ray keeps them
    in the driver's memory (small blocks are inlined at their owner). When the write asked for
    half a CPU it waited for a read+decode task to end, since those hold every CPU the actors
    leave, and the driver grew ~0.6-0.9 KB an image for the whole run (bench/speed/scale.py: +31 MiB
    over 50,000 images; +6 MiB, a plain Ray Data pipeline's level, with the write at 0 CPUs)."""
    from facepipe.run.ray_executor import WRITE_CPUS
    from facepipe.storage.tombstones import Tombstones

    ds = _dataset(photos, tmp_path, Tombstones())
    write = ds._logical_plan.dag  # the last operator: MapBatches(write_batch)
    assert "write_batch" in write.name, write.name
    assert WRITE_CPUS == 0 and write.ray_remote_args["num_cpus"] == 0
