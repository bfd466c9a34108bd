"""The scoring stage on its own: `facepipe score` over a written faces partition, the saved model
reused with --drocc-model, and rerunning a scoring run replacing its own rows."""

import json
import subprocess
import sys
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from facepipe.schema import EMBEDDED as EMBEDDED_SCHEMA
from facepipe.stages import write as writer
from facepipe.stages.read.sources import image_id_for
from facepipe.stages.score.drocc import DROCCConfig, train_drocc
from facepipe.stages.score.stage import DROCC_INPUTS, ScoreConfig, run_score
from facepipe.storage.output import Output

DT = "2026-11-02"


def _write_faces(out, n_images=60, faces_per=4, outliers=8, seed=0, files=((0, None),), root="/x"):
    """A published faces partition whose quality features (landmark offsets, sharpness, the
    verifier's face log-odds) look like confident real faces, plus a few detections that do not.
    ``files``: (start, stop) of the images each part file holds, written in that order;
    ``root``: where the images are (their ids, and so the faces' ids, hash their paths)."""
    rows = _face_rows(n_images, faces_per, outliers, seed, root)
    staged = []
    for start, stop in files:
        batch = pa.Table.from_pylist(rows[start:stop], schema=EMBEDDED_SCHEMA)
        staged += writer.write_batch(batch, str(out), "extract1", DT).column("files")[0].as_py()
    Output.open(str(out)).publish("extract1", staged)
    return outliers


def _face_rows(n_images: int, faces_per: int, outliers: int, seed: int, root: str = "/x") -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        offsets = rng.normal(0.1, 0.03, size=(faces_per, 10)).astype(np.float32)
        sharp = rng.normal(5.0, 0.3, size=(faces_per, 1)).astype(np.float32)
        logit = rng.normal(6.0, 1.0, size=(faces_per, 1)).astype(np.float32)
        scores = rng.uniform(0.95, 1.0, faces_per)
        if i < outliers:  # a texture: the landmarks disagree, the chip is flat, the verifier says no
            offsets[0], sharp[0], logit[0], scores[0] = 0.6, 1.0, -3.0, 0.7
        rows.append(
            {
                "image_id": image_id_for(f"{root}/{i}.jpg"),
                "source_uri": f"{root}/{i}.jpg",
                "width": 100,
                "height": 100,
                "status": "ok",
                "error": None,
                "n_faces": faces_per,
                "detector": "centerface@x",
                "boxes": [1.0, 1.0, 9.0, 9.0] * faces_per,
                "scores": scores.tolist(),
                "landmarks": [5.0] * 10 * faces_per,
                "t_decode": 0.0,
                "t_detect": 0.0,
                "embedder": "dlib_resnet@x",
                "align": "dlib_sp5",
                "embedding_dim": 128,
                "embeddings": rng.normal(size=faces_per * 128).tolist(),
                "landmark_offsets": offsets.reshape(-1).tolist(),
                "sharpness": sharp.reshape(-1).tolist(),
                "detail": [-2.0] * faces_per,
                "face_logit": logit.reshape(-1).tolist(),
                "t_embed": 0.0,
            }
        )
    return rows


FAST = DROCCConfig(epochs=12, only_ce_epochs=3, hidden=64)


def _outliers(out):
    return duckdb.sql(
        "select face_id, outlier_score, is_outlier, model_id, run_id from "
        f"read_parquet('{out}/face_outliers/*/*.parquet')"
    ).fetchall()


def test_score_cli_scores_every_face_and_flags_the_far_ones(ray_cluster, tmp_path):
    out = tmp_path / "out"
    n_far = _write_faces(out)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "facepipe.cli",
            "score",
            "--output",
            str(out),
            "--dt",
            DT,
            "--ray-address",
            ray_cluster.address,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ray_cluster.env,
    )
    assert r.returncode == 0, r.stderr
    assert "240 faces of dt=2026-11-02 scored" in r.stdout, r.stdout
    rows = _outliers(out)
    assert len(rows) == 240 and {x[4] for x in rows} == {f"score-{DT}"}
    far = {writer.face_id_for(image_id_for(f"/x/{i}.jpg"), 0) for i in range(n_far)}
    ranked = [x[0] for x in sorted(rows, key=lambda x: -x[1])]
    assert set(ranked[:n_far]) == far  # the planted outliers score highest
    assert {x[0] for x in rows if x[2]} == far  # and they, only they, are flagged at the default threshold


def test_saved_model_is_reused_and_reruns_replace_their_rows(ray_cluster, tmp_path):
    out = tmp_path / "out"
    _write_faces(out)
    first = run_score(str(out), DT, "s1", ScoreConfig(drocc=FAST))
    (info,) = first["models"].values()
    reused = run_score(str(out), DT, "s2", ScoreConfig(model=info["artifact"]))
    assert next(iter(reused["models"].values()))["model_id"] == info["model_id"]
    by_run = {}
    for face_id, score, _, _model_id, run_id in _outliers(out):
        by_run.setdefault(run_id, {})[face_id] = score
    assert by_run["s1"] == by_run["s2"]  # same model, same scores
    run_score(str(out), DT, "s1", ScoreConfig(drocc=FAST))  # rerun s1: replaces, never duplicates
    assert sum(1 for r in _outliers(out) if r[4] == "s1") == 240
    desc = json.loads((out / "_models" / "drocc" / (info["model_id"].replace("@", "-") + ".json")).read_text())
    assert desc["model_id"] == info["model_id"] and desc["threshold_policy"].startswith("typical")
    assert desc["inputs"] == list(DROCC_INPUTS)


def test_driver_and_ray_tasks_train_and_score_alike(ray_cluster, tmp_path):
    """A small partition is trained on and scored in the driver (no Ray worker to start), a large
    one in Ray tasks: the same faces get the same model and the same scores either way."""
    out = tmp_path / "out"
    _write_faces(out)
    here = run_score(str(out), DT, "s1", ScoreConfig(drocc=FAST))
    by_task = run_score(str(out), DT, "s2", ScoreConfig(drocc=FAST, driver_max_faces=0))
    assert [m["model_id"] for m in here["models"].values()] == [m["model_id"] for m in by_task["models"].values()]
    assert here["scored"] == by_task["scored"] == 240 and here["outliers"] == by_task["outliers"]
    by_run: dict = {}
    for face_id, score, flagged, _model_id, run_id in _outliers(out):
        by_run.setdefault(run_id, {})[face_id] = (round(score, 4), flagged)
    assert by_run["s1"] == by_run["s2"]


def test_the_model_and_scores_do_not_depend_on_how_rows_were_grouped_into_files(ray_cluster, tmp_path):
    """The same faces, published as one file or as three files written in another order (the
    Ray and local executors group rows differently; part names carry a random part), train the
    same model and get the same scores."""
    one, three = tmp_path / "one", tmp_path / "three"
    _write_faces(one)
    _write_faces(three, files=((40, None), (0, 15), (15, 40)))
    a = run_score(str(one), DT, "s", ScoreConfig(drocc=FAST))
    b = run_score(str(three), DT, "s", ScoreConfig(drocc=FAST))
    assert [m["model_id"] for m in a["models"].values()] == [m["model_id"] for m in b["models"].values()]
    assert sorted(_outliers(one)) == sorted(_outliers(three))


def test_the_same_faces_under_other_paths_train_the_same_model(ray_cluster, tmp_path):
    """Face ids hash the images' paths: an archive moved or renamed (another bucket, another
    prefix) must flag the same faces. The training sample was in face id order, so the same faces
    under another root trained another model (seen in the shipped model's build, twice)."""
    a_out, b_out = tmp_path / "a", tmp_path / "b"
    _write_faces(a_out, root="/photos")
    _write_faces(b_out, root="s3://archive/2019/photos")
    a = run_score(str(a_out), DT, "s", ScoreConfig(drocc=FAST))
    b = run_score(str(b_out), DT, "s", ScoreConfig(drocc=FAST))
    assert [m["model_id"] for m in a["models"].values()] == [m["model_id"] for m in b["models"].values()]
    per_path = [
        duckdb.sql(
            f"select regexp_extract(i.source_uri, '[^/]+$'), f.face_index, o.outlier_score, o.is_outlier "
            f"from read_parquet('{out}/face_outliers/*/*.parquet') o join read_parquet('{out}/faces/*/*.parquet') f "
            f"using (face_id) join read_parquet('{out}/images/*/*.parquet') i using (image_id)"
        ).fetchall()
        for out in (a_out, b_out)
    ]
    assert sorted(per_path[0]) == sorted(per_path[1]) and len(per_path[0]) == 240


def test_an_inverted_model_scores_nothing(ray_cluster, tmp_path):
    """A model that would rank faces backwards (stopped right after the CE-only epochs) is not used:
    the summary says why and no face_outliers rows are written."""
    out = tmp_path / "out"
    _write_faces(out)
    summary = run_score(str(out), DT, "s1", ScoreConfig(drocc=DROCCConfig(epochs=3, only_ce_epochs=3, hidden=64)))
    (info,) = summary["models"].values()
    assert "model inverted" in info["skipped"] and "no usable model" in summary["skipped"], summary
    assert not (out / "face_outliers").exists() and not (out / "_models").exists()
    # the same for an inverted model handed over with --drocc-model
    saved = tmp_path / "inverted.pt"
    inverted = train_drocc(
        np.random.default_rng(0).normal(size=(200, len(DROCC_INPUTS))).astype(np.float32),
        DROCCConfig(epochs=3, only_ce_epochs=3, hidden=64),
    )
    inverted.inputs = DROCC_INPUTS
    saved.write_bytes(inverted.to_bytes())
    summary = run_score(str(out), DT, "s2", ScoreConfig(model=str(saved)))
    assert "model inverted" in next(iter(summary["models"].values()))["skipped"], summary
    assert not (out / "face_outliers").exists()


def test_a_model_of_other_inputs_is_a_clear_error(ray_cluster, tmp_path):
    """A saved model that scored other inputs (the identity embedding of the first versions) is refused by name."""
    out = tmp_path / "out"
    _write_faces(out)
    saved = tmp_path / "embedding-model.pt"
    saved.write_bytes(train_drocc(np.random.default_rng(0).normal(size=(50, 128)).astype(np.float32), FAST).to_bytes())
    with pytest.raises(ValueError, match="takes other inputs"):
        run_score(str(out), DT, "s1", ScoreConfig(model=str(saved)))


def test_an_archive_written_before_the_quality_columns_still_scores_its_new_faces(ray_cluster, tmp_path):
    """Upgrading: an older partition has no landmark_offsets / sharpness / face_logit (and sorts
    first, so a dataset would take its schema). The new night is scored; the old faces count as
    unscored instead of hiding the new columns."""
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    _write_faces(out)
    new = next((out / "faces" / f"dt={DT}").glob("*.parquet"))
    old = out / "faces" / "dt=2026-11-01" / "part-old-0.parquet"
    old.parent.mkdir(parents=True)
    pq.write_table(pq.read_table(new).drop_columns(["landmark_offsets", "sharpness", "face_logit"]), old)
    ds = Output.open(str(out)).dataset("faces")
    assert {"landmark_offsets", "sharpness", "face_logit"} <= set(ds.schema.names)
    assert run_score(str(out), DT, "s1", ScoreConfig(drocc=FAST))["scored"] == 240
    summary = run_score(str(out), "2026-11-01", "s0", ScoreConfig(drocc=FAST))
    assert summary["unscored"] == 240 and "no faces with quality features" in summary["skipped"]


def test_a_partition_holding_files_written_before_detail_scores_every_face(tmp_path):
    """Upgrading within a partition (a night rerun, ``facepipe score`` of an old date): a file
    written before ``faces.detail`` existed is read with detail null -- its faces scored, their
    detail term 0 -- beside a newer file of the same partition (the driver path)."""
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    _write_faces(out, files=((0, 30), (30, None)))
    first, *_ = sorted((out / "faces" / f"dt={DT}").glob("*.parquet"))
    pq.write_table(pq.read_table(first).drop_columns(["detail"]), first)
    summary = run_score(str(out), DT, "s1", ScoreConfig(drocc=FAST))
    assert summary["scored"] == 240
    t = duckdb.sql(f"select detail_score from read_parquet('{out}/face_outliers/*/*.parquet')").fetchall()
    assert len(t) == 240 and all(v == 0.0 for (v,) in t)


def test_scoring_follows_the_executor_the_run_chose(monkeypatch):
    """Without Ray up (a run of the local executor) every partition is trained and scored in the
    driver, however large; with Ray up, only those of at most driver_max_faces faces."""
    import types

    from facepipe.stages.score.stage import ScoreConfig, on_driver

    cfg = ScoreConfig(driver_max_faces=10)
    # the decision only: Ray's is_initialized stands in (the runs themselves: tests/run/, tests/test_exit_codes.py)
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: False))
    assert on_driver(5, cfg) and on_driver(10**6, cfg)
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: True))
    assert on_driver(10, cfg) and not on_driver(11, cfg)


@pytest.mark.ray
def test_a_ray_wait_of_the_stage_is_bounded(ray_cluster):
    """A task the cluster can never schedule (more CPUs than it has) fails the wait after its
    bound, cancelled, instead of hanging the run (the real cluster, a real task)."""
    import ray

    from facepipe.stages.score.stage import bounded_get

    never = ray.remote(num_cpus=64)(lambda: 1).remote()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="did not finish in 2s"):
        bounded_get(never, 2.0, "a task that needs 64 CPUs")
    assert time.monotonic() - t0 < 30
