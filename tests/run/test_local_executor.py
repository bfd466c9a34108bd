"""The local executor (facepipe/run/local_executor.py): a small job on local paths with no cluster to join runs
in worker processes on this machine, without Ray, and writes the same tables as the Ray pipeline
-- every image row (failures included), face, box, embedding, outlier score and identity. When it
is chosen and when Ray is: by the flags, the cluster address and the input's size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import numpy as np
import pytest

from facepipe.config import ComputeConfig, RunConfig
from facepipe.errors import UserError
from facepipe.run.local_executor import local_cpus, local_possible, local_workers, worth_ray
from facepipe.stages.read.sources import Unit
from testbed import archive
from testbed.procs import REPO


def _cfg(inputs=("/data/in",), output="/data/out", **compute) -> RunConfig:
    return RunConfig(inputs=tuple(inputs), output=output, compute=ComputeConfig(**compute))


def test_auto_goes_local_only_with_local_paths_and_no_cluster_to_join(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    assert local_possible(_cfg(), None)
    assert not local_possible(_cfg(), "127.0.0.1:6379"), "a cluster address means Ray"
    assert not local_possible(_cfg(output="s3://b/out"), None), "S3 stays with Ray"
    assert not local_possible(_cfg(executor="ray"), None)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert not local_possible(_cfg(), None)
    with pytest.raises(UserError, match="--executor local runs on this machine"):
        local_possible(_cfg(executor="local"), None)


def test_with_a_gpu_auto_takes_ray_and_local_forks_no_worker(monkeypatch):
    """CUDA does not survive a fork: with a GPU for the models, ``auto`` goes to Ray (a GPU actor
    pool), and ``--executor local`` runs the chain in its one process. The GPU is forced here (no
    GPU on this machine): ``resolve_device`` answers cuda; the run on a real GPU is
    bench/RESULTS.md's to report when one is lent."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    units = [Unit("image", f"/{i}.jpg", 1 << 20) for i in range(8)]
    assert local_possible(_cfg(), None) and local_workers(_cfg(), units) == min(local_cpus(), 8)
    monkeypatch.setattr("facepipe.run.actors.resolve_device", lambda device: "cuda")
    assert not local_possible(_cfg(), None), "auto: Ray, not a fork of CUDA"
    assert local_possible(_cfg(executor="local"), None) and local_workers(_cfg(executor="local"), units) == 1


def test_auto_takes_ray_after_all_for_a_large_input():
    small, big = [Unit("image", "/a.jpg", 1 << 20)], [Unit("tar", "/a.tar", 1 << 30)]
    assert not worth_ray(_cfg(), small) and worth_ray(_cfg(), big)
    assert not worth_ray(_cfg(executor="local"), big), "asked for local: local"


def _tables(out):
    q = lambda sql: duckdb.sql(sql.replace("OUT", str(out))).fetchall()  # noqa: E731
    faces = q("select face_id, image_id, face_index, x1, y1, x2, y2, embedding from read_parquet('OUT/faces/*/*')")
    images = "select image_id, source_uri, status, error, n_faces from read_parquet('OUT/images/*/*.parquet')"
    return {
        "images": q(images + " order by all"),
        "faces": sorted(f[:7] for f in faces),
        "embeddings": {f[0]: np.asarray(f[7]) for f in faces},
        "outliers": q("select face_id, is_outlier from read_parquet('OUT/face_outliers/*/*.parquet') order by all"),
        "identities": q(
            "select count(distinct identity_id), count(*) from read_parquet('OUT/face_identity/*/*.parquet') "
            "where identity_id is not null"
        ),
    }


@pytest.mark.slow
def test_a_local_run_writes_what_a_ray_run_writes(ray_cluster, photos, tmp_path):
    from facepipe.run.job import run

    arch = archive.build(tmp_path / "archive", photos)
    by_ray = run(archive.run_config(arch.inputs, tmp_path / "ray", "same", "2026-11-04"))
    assert by_ray.resources["executor"] == "ray"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "run", *arch.inputs, "--output", str(tmp_path / "local"),
         "--run-id", "same", "--dt", "2026-11-04", "--image-column", "image", "--id-column", "key"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "local worker processes, no Ray" in p.stdout
    m = json.loads((tmp_path / "local" / "_runs" / "same.json").read_text())
    assert m["resources"]["executor"] == "local" and m["timing"].get("ray_start_s") is None
    assert m["counts"]["images"] == by_ray.counts.images and m["counts"]["faces"] == by_ray.counts.faces
    got, want = _tables(tmp_path / "local"), _tables(tmp_path / "ray")
    assert got["images"] == want["images"]
    assert [f[:3] for f in got["faces"]] == [f[:3] for f in want["faces"]]
    np.testing.assert_allclose([f[3:] for f in got["faces"]], [f[3:] for f in want["faces"]], atol=1e-3)
    for face_id, e in want["embeddings"].items():
        np.testing.assert_allclose(got["embeddings"][face_id], e, atol=1e-5, err_msg=face_id)
    assert got["outliers"] == want["outliers"] and got["identities"] == want["identities"]


def test_a_bad_input_under_the_local_executor_is_still_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "run", str(tmp_path / "nope"), "--output", str(tmp_path / "o")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_the_local_executor_keeps_erased_images_out(photos, tmp_path):
    """`facepipe forget` an image, then a full local rerun: its row and faces never come back."""
    import shutil

    src = tmp_path / "in"
    src.mkdir()
    for name in ("obama.jpg", "biden.jpg"):
        shutil.copy(photos[name], src / name)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cli = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "facepipe.cli", *a], cwd=REPO, env=env, capture_output=True, text=True, timeout=280
    )
    out = tmp_path / "out"
    first = cli("run", str(src), "--output", str(out), "--run-id", "n1", "--no-score", "--no-cluster")
    assert first.returncode == 0, first.stderr[-3000:]
    q = lambda sql: duckdb.sql(sql.replace("OUT", str(out))).fetchall()  # noqa: E731
    (biden,) = q("select image_id from read_parquet('OUT/images/*/*.parquet') where source_uri like '%biden.jpg'")[0]
    gone = cli("forget", "--output", str(out), "--image-id", biden, "--reason", "test")
    assert gone.returncode == 0, gone.stderr[-3000:]
    again = cli("run", str(src), "--output", str(out), "--run-id", "n2", "--full", "--no-score", "--no-cluster")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "_runs" / "n2.json").read_text())["resources"]["executor"] == "local"
    assert q(f"select count(*) from read_parquet('OUT/images/*/*.parquet') where image_id = '{biden}'") == [(0,)]
    assert q(f"select count(*) from read_parquet('OUT/faces/*/*.parquet') where image_id = '{biden}'") == [(0,)]
