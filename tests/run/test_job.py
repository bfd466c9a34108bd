"""The extract job end to end on a real Ray cluster; DuckDB reads what it wrote."""

import json
import re
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import REPO

from facepipe.run.job import run
from facepipe.run.manifest import RunManifest
from testbed import archive

pytestmark = pytest.mark.slow


def _q(sql):
    return duckdb.sql(sql).fetchall()


@pytest.fixture(scope="module")
def first_run(ray_cluster, photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    arch = archive.build(root / "archive", photos)
    out = root / "out"
    manifest = run(archive.run_config(arch.inputs, out, "night1"))
    return arch, out, manifest


def test_every_input_is_one_images_row_with_its_status(first_run):
    arch, out, m = first_run
    rows = dict(_q(f"select source_uri, status from read_parquet('{out}/images/*/*.parquet', hive_partitioning=true)"))
    assert rows == arch.expected_status
    errors = _q(f"select source_uri, error from read_parquet('{out}/images/*/*.parquet') where status <> 'ok'")
    assert all(e and "\n" not in e for _, e in errors), errors


def test_every_face_of_the_real_photos_is_found(first_run):
    arch, out, _ = first_run
    counts = dict(_q(f"select source_uri, n_faces from read_parquet('{out}/images/*/*.parquet') where status = 'ok'"))
    assert {k: counts[k] for k in arch.expected_faces} == arch.expected_faces


def test_duckdb_counts_agree_with_the_run_manifest(first_run):
    _, out, m = first_run
    saved = json.loads((Path(out) / "_runs" / "night1.json").read_text())
    assert RunManifest.from_json(saved) == m  # the JSON holds the whole manifest the run returned
    assert saved["manifest_uri"] == m.manifest_uri == str(Path(out) / "_runs" / "night1.json")
    faces = f"read_parquet('{out}/faces/*/*.parquet', hive_partitioning=true)"
    images = f"read_parquet('{out}/images/*/*.parquet', hive_partitioning=true)"
    [(n_faces, n_ids, dts)] = _q(f"select count(*), count(distinct face_id), list(distinct dt::varchar) from {faces}")
    assert n_faces == n_ids == saved["counts"]["faces"] and dts == ["2026-11-01"]
    [(n_img, n_ok, sum_faces)] = _q(f"select count(*), count(*) filter (status = 'ok'), sum(n_faces) from {images}")
    assert (n_img, n_ok, sum_faces) == (saved["counts"]["images"], saved["counts"]["images_ok"], n_faces)
    assert _q(f"select count(*) from {faces} f anti join {images} i using (image_id)") == [(0,)]
    assert set(saved["timing"]["stage_task_s"]) == {"decode", "detect", "embed", "write"}
    assert saved["versions"]["ray"] and saved["detector"].startswith("yunet@")
    assert saved["embedder"].startswith("dlib_resnet@")


def test_every_face_has_an_embedding_and_same_person_faces_are_close(first_run):
    """Embeddings are written by default, one 128-d dlib descriptor per face, and the obama photos
    (each archived as loose file, tar member and Parquet row) are one person under 0.6."""
    arch, out, m = first_run
    rows = _q(f"""select i.source_uri, f.embedding, f.embedder, f.align
                  from read_parquet('{out}/faces/*/*.parquet') f
                  join read_parquet('{out}/images/*/*.parquet') i using (image_id)""")
    assert len(rows) == m.counts.faces
    assert {r[2] for r in rows} == {m.embedder} and all(r[3].startswith("dlib_sp5") for r in rows)
    emb = np.array([r[1] for r in rows], np.float32)
    assert emb.shape[1] == 128 and np.isfinite(emb).all()
    person = [re.split("[/#]", r[0])[-1].split(".")[0].rstrip("0123456789") for r in rows]
    obama = [i for i, p in enumerate(person) if p.startswith("obama")]
    others = [i for i, p in enumerate(person) if not p.startswith(("obama", "biden"))]
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    assert len(obama) >= 5 and d[np.ix_(obama, obama)].max() < 0.6, d[np.ix_(obama, obama)].round(2)
    assert d[np.ix_(obama, others)].min() > 0.6, d[np.ix_(obama, others)].round(2)


def test_landmarks_lie_in_their_boxes(first_run):
    _, out, _ = first_run
    bad = _q(f"""select face_id from read_parquet('{out}/faces/*/*.parquet')
                 where not (landmarks[1] between x1 - 2 and x2 + 2 and landmarks[2] between y1 - 2 and y2 + 2
                            and landmarks[5] between x1 and x2 and landmarks[6] between y1 and y2)""")
    assert bad == []


def test_rerun_of_a_run_id_replaces_it_and_keeps_other_runs(first_run, photos, tmp_path):
    import shutil

    arch, first_out, m1 = first_run
    out = tmp_path / "out"  # a private copy: the module's output stays as night 1 left it
    shutil.copytree(first_out, out)
    other = archive.build(tmp_path / "other", photos)
    m2 = run(archive.run_config(other.inputs[2:], out, "night2", dt="2026-11-02"))  # parquet only, next day
    again = run(archive.run_config(arch.inputs, out, "night1"))
    assert again.counts == m1.counts
    per_run = dict(_q(f"select run_id, count(*) from read_parquet('{out}/faces/*/*.parquet') group by 1"))
    assert per_run == {"night1": m1.counts.faces, "night2": m2.counts.faces}
    dup = _q(f"select face_id from read_parquet('{out}/faces/*/*.parquet') group by 1 having count(*) > 1")
    assert dup == []
    assert not list((Path(out) / "_staging").glob("*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "checkpoint, preset",
    [("mnet025_face_detector_1mb.pth", "mnet025_1mb"), ("mnet025_pytorch_retinaface_3c31dcd.pth", "mnet025_relu")],
)
def test_retinaface_checkpoints_run_end_to_end(ray_cluster, photos, shared_dir, tmp_path, checkpoint, preset):
    """`facepipe run --detector retinaface --detector-weights CKPT --detector-config PRESET` through
    Ray: every face of the real photos found, embedded, and tagged with the checkpoint's id."""
    import dataclasses

    from facepipe.stages.detect.stage import DetectConfig

    arch = archive.build(tmp_path / "archive", photos)
    cfg = archive.run_config(arch.inputs, tmp_path / "out", "retina")
    cfg = dataclasses.replace(
        cfg,
        detect=DetectConfig(
            name="retinaface", weights=str(shared_dir / "data" / "retinaface" / checkpoint), config=preset
        ),
    )
    m = run(cfg)
    assert m.detector.startswith(f"retinaface:{preset}@")
    counts = dict(
        _q(f"select source_uri, n_faces from read_parquet('{tmp_path}/out/images/*/*.parquet') where status = 'ok'")
    )
    assert {k: counts[k] for k in arch.expected_faces} == arch.expected_faces
    rows = _q(f"select detector, len(embedding) from read_parquet('{tmp_path}/out/faces/*/*.parquet')")
    assert len(rows) == m.counts.faces and {r for r in rows} == {(m.detector, 128)}


def test_every_face_gets_an_outlier_score_and_the_model_is_saved(first_run):
    """The final stage: one face_outliers row per face of the run, outlier_score = drocc_score -
    the verifier's face log-odds, flags consistent with the threshold, the DROCC model saved where
    the manifest says -- and not one of the real photos' faces flagged."""
    _, out, _ = first_run
    m = json.loads((Path(out) / "_runs" / "night1.json").read_text())
    s = m["score"]
    (info,) = s["models"].values()
    assert s["scored"] == m["counts"]["faces"] and "model_id" in info, s
    rows = _q(
        "select o.face_id, o.outlier_score, o.is_outlier, o.threshold, o.model_id, o.run_id, o.drocc_score, "
        f"f.face_logit from read_parquet('{out}/face_outliers/*/*.parquet') o "
        f"join read_parquet('{out}/faces/*/*.parquet') f using (face_id) where o.run_id = 'night1'"
    )
    faces = {r[0] for r in _q(f"select face_id from read_parquet('{out}/faces/*/*.parquet') where run_id = 'night1'")}
    assert sorted(r[0] for r in rows) == sorted(faces)
    assert all(r[2] == (r[1] > r[3]) and r[4] == info["model_id"] for r in rows)
    assert all(abs(r[1] - (r[6] - r[7])) < 1e-4 for r in rows)
    assert s["outliers"] == 0, [r for r in rows if r[2]]
    assert Path(info["artifact"]).is_file() and Path(info["artifact"]).with_suffix(".json").is_file()
    assert sum(r[2] for r in rows) == s["outliers"]


def test_each_person_is_one_identity_and_no_two_people_share_one(first_run):
    """The clustering stage on real photos: obama x5 (partial faces included) one identity; the
    astronaut in every odd format one identity; biden, grace hopper, Tom Hanks and t1.jpg's six
    people each their own."""
    _, out, _ = first_run
    rows = _q(f"""select i.source_uri, f.face_index, fi.identity_id
                  from read_parquet('{out}/faces/*/*.parquet') f
                  join read_parquet('{out}/images/*/*.parquet') i using (image_id)
                  join read_parquet('{out}/face_identity/*/*.parquet') fi using (face_id)""")
    person = {}
    for uri, k, ident in rows:
        name = re.split("[/#]", uri)[-1].split(".")[0]
        who = (
            "astronaut"
            if "/odd/" in uri
            else "obama"
            if name.startswith("obama")
            else f"t1#{k}"
            if name == "t1"
            else name
        )
        person.setdefault(who, set()).add(ident)
    assert all(len(ids) == 1 and None not in ids for ids in person.values()), person
    owners = {}
    for who, ids in person.items():
        owners.setdefault(next(iter(ids)), []).append(who)
    assert all(len(w) == 1 for w in owners.values()), {i: w for i, w in owners.items() if len(w) > 1}
    n_ident = _q(f"select count(*) from read_parquet('{out}/identities/*/*.parquet')")[0][0]
    assert n_ident == len(person)


def test_eval_cluster_reports_perfect_identities_on_the_real_photos(first_run, tmp_path):
    """`facepipe eval-cluster` with a hand-written label file (source_uri, label, face_index)."""
    import subprocess
    import sys

    _, out, _ = first_run
    rows = _q(f"""select i.source_uri, f.face_index from read_parquet('{out}/faces/*/*.parquet') f
                  join read_parquet('{out}/images/*/*.parquet') i using (image_id) where f.run_id = 'night1'""")
    lines = ["source_uri,label,face_index"]
    for uri, k in rows:
        name = re.split("[/#]", uri)[-1].split(".")[0]
        who = (
            "astronaut"
            if "/odd/" in uri
            else "obama"
            if name.startswith("obama")
            else f"t1-{k}"
            if name == "t1"
            else name
        )
        lines.append(f"{uri},{who},{k}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "facepipe.cli",
            "eval-cluster",
            "--output",
            str(out),
            "--labels",
            str(tmp_path / "labels.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert (
        f"{len(rows)} labelled faces" in r.stdout
        and "BCubed P/R/F 1.0000/1.0000/1.0000" in r.stdout
        and "merged-label errors 0" in r.stdout
    ), r.stdout


def test_two_nights_of_real_photos_group_faces_like_one_run_and_keep_night_one_ids(first_run, tmp_path):
    """The cluster stage as the nightly job runs it, on the real photos' embeddings: night 1
    has part of the images, night 2 adds the rest. The identities group the faces exactly as the
    one-shot run did, and no face of night 1 changes identity -- for several splits, chosen by
    the images' names under the archive (not by their ids, which hash the temporary path: CI once
    drew a night 1 of 10 faces whose cut fell to the lower bound, and night 2 split obama)."""
    import pyarrow.parquet as pq

    from facepipe.stages.cluster.stage import ClusterConfig, run_cluster
    from facepipe.storage.output import Output

    _, out, _ = first_run
    output = Output.open(str(out))
    faces = output.dataset("faces").to_table().drop_columns(["dt"]).sort_by("face_id")
    images = output.dataset("images").to_table(columns=["image_id", "source_uri"])
    name = dict(zip(images.column("image_id").to_pylist(), images.column("source_uri").to_pylist(), strict=True))
    ranked = sorted(set(faces.column("image_id").to_pylist()), key=lambda im: name[im][len(str(out.parent)) :])
    one_shot = dict(_q(f"select face_id, identity_id from read_parquet('{out}/face_identity/*/*.parquet')"))

    def groups(m):
        g = {}
        for f, i in m.items():
            g.setdefault(i, set()).add(f)
        return sorted(map(sorted, g.values()))

    splits = {"even": lambda r: r % 2, "odd": lambda r: 1 - r % 2, "halves": lambda r: int(r >= len(ranked) // 2)}
    for split, night_of_rank in splits.items():
        night_of = {im: night_of_rank(r) for r, im in enumerate(ranked)}
        inc = tmp_path / split
        ids = []
        for night, dt in enumerate(["2026-11-01", "2026-11-02"]):
            rows = [i for i, im in enumerate(faces.column("image_id").to_pylist()) if night_of[im] == night]
            (inc / "faces" / f"dt={dt}").mkdir(parents=True)
            pq.write_table(faces.take(rows), inc / "faces" / f"dt={dt}" / f"part-night{night}-0.parquet")
            summary = run_cluster(str(inc), dt, f"night{night}", ClusterConfig())
            assert summary["mode"] == ("full" if night == 0 else "incremental")
            ids.append(dict(_q(f"select face_id, identity_id from read_parquet('{inc}/face_identity/*/*.parquet')")))
        assert all(ids[1][f] == i for f, i in ids[0].items()), split
        assert groups(ids[1]) == groups(one_shot), split


def test_every_warehouse_query_in_the_docs_runs_on_real_output(first_run, tmp_path):
    """docs/warehouse.md's DuckDB queries, run as written (OUT = the output root) on a real run's
    output. A table the run left empty (no merges yet: no identity_events) gets an empty file of
    its schema, so the query still has to bind against the real columns."""
    import shutil

    import pyarrow.parquet as pq

    from facepipe import schema

    _, out, _ = first_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for name, s in schema.TABLES.items():
        if not list(copy.glob(f"{name}/*/*.parquet")):
            (copy / name / "dt=2026-11-01").mkdir(parents=True, exist_ok=True)
            pq.write_table(s.empty_table(), copy / name / "dt=2026-11-01" / "part-empty-0.parquet")
    if not list(copy.glob("corrections/*.parquet")):  # none made by hand yet
        (copy / "corrections").mkdir()
        pq.write_table(schema.CORRECTIONS.empty_table(), copy / "corrections" / "part-empty.parquet")
    doc = (REPO / "docs" / "warehouse.md").read_text()
    queries = re.findall(r"```sql duckdb\n(.*?)```", doc, re.S)
    assert len(queries) >= 8
    results = [duckdb.sql(q.replace("'OUT/", f"'{copy}/")).fetchall() for q in queries]
    people = next(r for q, r in zip(queries, results) if "AS people" in q)
    assert people[0][0] >= 10 and people[0][1] == 0
    failures = next(r for q, r in zip(queries, results) if "GROUP BY status" in q)
    assert {s for s, _, _ in failures} >= {"corrupt", "not_image"}
    assert all(len(r) > 0 for q, r in zip(queries, results) if "identity_events" not in q and "corrections" not in q)
