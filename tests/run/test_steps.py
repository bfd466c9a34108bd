"""The extract chain is declared once (facepipe/run/steps.py) and each executor interprets it:
one chain, built once, run by the Ray executor and by the local executor on the same photos,
stages the same rows; the two-pool layout (embed_pool) runs under both; a step added to the chain
runs under both. And a local worker that dies ends the run at once instead of hanging it."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time

import duckdb
import numpy as np
import pytest
import ray

from facepipe.config import ComputeConfig
from facepipe.errors import ClusterStalled, retryable_error
from facepipe.run import local_executor, ray_executor
from facepipe.run.steps import Step, extract_chain
from facepipe.stages.read.sources import list_units
from facepipe.storage.output import Output
from facepipe.storage.tombstones import Tombstones
from testbed import archive

NO_ERASURES = Tombstones(frozenset(), frozenset(), frozenset())
STALL_S = ComputeConfig().stall_timeout_s


COLUMNS = {
    "images": ("image_id", "source_uri", "status", "n_faces"),
    "faces": ("face_id", "x1", "y1", "x2", "y2", "landmarks", "embedding", "sharpness", "face_logit"),
}


def _staged(out: Output, run_id: str) -> dict[str, list]:
    root = out.staging_path(run_id)
    q = lambda cols, t: duckdb.sql(f"select {cols} from read_parquet('{root}/{t}/*/*.parquet') order by all").fetchall()  # noqa: E731,E501
    return {
        "images": q(", ".join(COLUMNS["images"]), "images"),
        "faces": q(", ".join(COLUMNS["faces"]), "faces"),
    }


def _chain_and_units(tmp_path, photos, **compute):
    arch = archive.build(tmp_path / "archive", photos)
    cfg = archive.run_config(arch.inputs, tmp_path / "out", "steps", compute=ComputeConfig(device="cpu", **compute))
    out = Output(cfg.output)
    return extract_chain(cfg, out, NO_ERASURES), list_units(list(cfg.inputs)), out, cfg


@pytest.mark.slow
def test_one_chain_stages_the_same_rows_under_each_executor(ray_cluster, photos, tmp_path):
    chain, units, out, cfg = _chain_and_units(tmp_path, photos, embed_pool=True, rows_per_file=5)
    assert [s.name for s in chain.steps] == ["decode", "detect", "embed", "write"]
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the added step lives in this test module
    chain = dataclasses.replace(chain, steps=(Step("drop_tar", _drop_source, {"part": ".tar"}), *chain.steps))
    res = ray_executor.plan_resources(cfg.compute, 2, 0)
    by_ray = ray_executor.run_chain(chain, cfg.compute, units, res)
    ray_rows = _staged(out, "steps")
    out.clear_staging("steps")
    by_local = local_executor.run_chain(chain, units, workers=2, stall_s=STALL_S)
    local_rows = _staged(out, "steps")
    assert ray_rows["images"] and ray_rows["faces"], "the archive has faces"
    assert not any(".tar" in r[1] for r in ray_rows["images"]), "the added step ran"
    for table in ("images", "faces"):
        for a, b in zip(local_rows[table], ray_rows[table], strict=True):
            for name, x, y in zip(COLUMNS[table], a, b, strict=True):
                if name in ("embedding", "face_logit"):  # batched with other neighbours: float rounding, as a rerun
                    np.testing.assert_allclose(x, y, atol=1e-5, err_msg=a[0])
                else:
                    assert x == y, (table, a[0], name)
    assert sum(r["n_images"] for r in by_ray) == sum(r["n_images"] for r in by_local) == len(ray_rows["images"])


def _drop_source(batch: dict, part: str) -> dict:
    """A step added to the chain: drops the rows whose source names ``part``."""
    keep = [part not in str(u) for u in batch["source_uri"]]
    return {k: v[keep] for k, v in batch.items()}


def _die_on(batch: dict, victim: str) -> dict:
    if any(victim in str(u) for u in batch["source_uri"]):
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer ends a worker
    return batch


def test_a_local_worker_that_dies_ends_the_run_at_once(photos, tmp_path):
    chain, units, _, _ = _chain_and_units(tmp_path, photos)
    assert len(units) > 2
    victim = sorted(u.uri for u in units)[0]
    killer = Step("killer", _die_on, {"victim": victim})
    chain = dataclasses.replace(chain, steps=(killer, *chain.steps))
    with pytest.raises(local_executor.WorkerDied, match="a worker process of the local executor died"):
        local_executor.run_chain(chain, units, workers=2, stall_s=STALL_S)


def _hang_on(batch: dict, victim: str, seconds: float = 3600) -> dict:
    if any(victim in str(u) for u in batch["source_uri"]):
        time.sleep(seconds)  # as a worker deadlocked on a lock held at the fork: alive, doing nothing
    return batch


def test_a_local_pool_that_stopped_working_ends_the_run_instead_of_hanging(photos, tmp_path):
    chain, units, _, _ = _chain_and_units(tmp_path, photos)
    victim = sorted(u.uri for u in units)[0]
    chain = dataclasses.replace(chain, steps=(Step("hang", _hang_on, {"victim": victim}), *chain.steps))
    t0 = time.monotonic()
    with pytest.raises(local_executor.WorkerDied, match="did no work for 3s"):
        local_executor.run_chain(chain, units, workers=2, stall_s=3.0)
    assert time.monotonic() - t0 < 60


def test_a_ray_run_that_stopped_making_progress_ends_instead_of_waiting_forever(ray_cluster, photos, tmp_path):
    """Ray Data waits forever on a task that never ends; the executor's liveness check ends the
    run (ClusterStalled: exit 3, nothing published) once no operator finished a task for
    --stall-timeout, naming what still runs."""
    chain, units, _, cfg = _chain_and_units(tmp_path, photos, stall_timeout_s=4.0)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    victim = sorted(u.uri for u in units)[0]
    # "hung" for 90 s: far past the bound, and the session cluster gets its CPU back afterwards
    chain = dataclasses.replace(chain, steps=(Step("hang", _hang_on, {"victim": victim, "seconds": 90}), *chain.steps))
    res = ray_executor.plan_resources(cfg.compute, 2, 0)
    t0 = time.monotonic()
    with pytest.raises(ClusterStalled, match=r"no progress for 4s \(--stall-timeout\).*MapBatches\(_hang_on\)"):
        ray_executor.run_chain(chain, cfg.compute, units, res)
    assert time.monotonic() - t0 < 60
    assert retryable_error(ClusterStalled("x"))[0] == "cluster"  # exit 3: the submitter retries it


def test_ray_datas_progress_counters_move_during_a_run(ray_cluster):
    """The liveness check reads Ray Data's per-operator counters (internal to the pinned Ray): they
    must move while a dataset runs, or every long run would look stalled."""
    seen = []

    def probe(batch: dict) -> dict:
        return batch

    ds = ray.data.range(64, override_num_blocks=16).map_batches(probe, batch_size=4)
    for _ in ds.iter_batches(batch_size=4):
        seen.append(ray_executor._progress())
    assert max(seen) > seen[0] > 0, seen  # rising while it runs (and 0 once no execution is left)
