"""`facepipe forget`: a person or images leave every table, identities are recomputed without
them, an audit record says what happened (ids only), and later runs -- `--full` included -- do
not bring them back. Real output of the job on a real Ray cluster, read back with DuckDB."""

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from facepipe.run.job import run
from facepipe.tools.erase import ForgetRequest, forget, load_tombstones, plan
from testbed import archive

pytestmark = pytest.mark.slow


def _q(sql: str, out) -> list:
    for t in ("images", "faces", "face_identity", "face_outliers", "identities", "identity_events"):
        sql = sql.replace(f"{{{t}}}", f"read_parquet('{out}/{t}/**/*.parquet', hive_partitioning=true)")
    return duckdb.sql(sql).fetchall()


@pytest.fixture(scope="module")
def night1(ray_cluster, photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("erase")
    arch = archive.build(root / "archive", photos)
    out = root / "out"
    run(archive.run_config(arch.inputs, out, "night1", "2026-11-01"))
    return arch, out


@pytest.fixture
def output(night1, tmp_path):
    """A private copy of night one's output for a test to erase from."""
    arch, out = night1
    shutil.copytree(out, tmp_path / "out")
    return arch, tmp_path / "out"


def _biggest_identity(out) -> tuple[str, list[str]]:
    [(ident, faces)] = _q(
        "select identity_id, list(face_id order by face_id) from {face_identity} where identity_id is not null "
        "group by 1 order by count(*) desc, 1 limit 1",
        out,
    )
    return ident, faces


def test_forgetting_an_identity_removes_its_faces_everywhere_and_audits_it(output):
    _, out = output
    ident, faces = _biggest_identity(out)
    assert len(faces) >= 2
    n_faces_before = _q("select count(*) from {faces}", out)[0][0]
    audit = forget(
        str(out), ForgetRequest(identity_ids=(ident,), request_id="req-1", requested_by="dpo", reason="ticket 42")
    )
    ids = "(" + ",".join(f"'{f}'" for f in faces) + ")"
    for table in ("faces", "face_identity", "face_outliers"):
        assert _q(f"select count(*) from {{{table}}} where face_id in {ids}", out) == [(0,)], table
    assert _q(f"select count(*) from {{identities}} where identity_id = '{ident}'", out) == [(0,)]
    if list(out.glob("identity_events/**/*.parquet")):  # a first night has no events
        assert _q(
            f"select count(*) from {{identity_events}} where list_contains(old_ids, '{ident}') or "
            f"list_contains(new_ids, '{ident}')",
            out,
        ) == [(0,)]
    assert _q("select count(*) from {faces}", out)[0][0] == n_faces_before - len(faces)
    # the audit record: what, when, who, why -- ids and counts, no embedding values
    saved = json.loads((out / "_audit" / "req-1.json").read_text())
    assert (
        saved["selector"]["identity_ids"] == [ident]
        and saved["requested_by"] == "dpo"
        and saved["reason"] == "ticket 42"
    )
    assert saved["erased"]["faces"] == len(faces) and saved["rows_removed"]["faces"] == len(faces)
    assert saved == {k: v for k, v in audit.items() if k != "audit_uri"}
    floats = [
        v
        for v in json.dumps(saved).replace(",", " ").replace("]", " ").split()
        if v.replace(".", "").replace("-", "").isdigit() and "." in v
    ]
    assert floats == [str(saved["seconds"])], "the audit record holds no numbers but its duration"
    assert not list((out / "_staging").glob("req-1*")), "staging left behind"
    assert load_tombstones(str(out)).face_ids == frozenset(faces)


def test_forgetting_one_image_recomputes_its_identity_without_it(output):
    _, out = output
    ident, faces = _biggest_identity(out)
    [(image_id,)] = _q(f"select image_id from {{faces}} where face_id = '{faces[0]}'", out)
    forget(str(out), ForgetRequest(image_ids=(image_id,)))
    assert _q(f"select count(*) from {{images}} where image_id = '{image_id}'", out) == [(0,)]
    assert _q(f"select count(*) from {{faces}} where image_id = '{image_id}'", out) == [(0,)]
    [(n, centroid, rep)] = _q(
        f"select n_faces, centroid, representative_face_id from {{identities}} where identity_id = '{ident}'", out
    )
    left = _q(
        f"select f.embedding, f.face_id from {{faces}} f join {{face_identity}} i using (face_id) where "
        f"i.identity_id = '{ident}'",
        out,
    )
    assert n == len(left) == len(faces) - 1
    assert np.allclose(centroid, np.mean([e for e, _ in left], axis=0), atol=1e-6)
    assert rep in {f for _, f in left}


def test_dry_run_writes_nothing(output):
    _, out = output
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    ident, faces = _biggest_identity(out)
    e = plan(str(out), ForgetRequest(identity_ids=(ident,)).resolved())
    assert e.face_ids == set(faces)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_erased_data_does_not_come_back_in_later_runs(output):
    arch, out = output
    ident, faces = _biggest_identity(out)
    tar_prefix = next(u for u in arch.inputs if u.endswith("/shards")) + "/"
    [(gh_id,)] = _q("select image_id from {images} where source_uri like '%grace_hopper.jpg'", out)
    forget(str(out), ForgetRequest(identity_ids=(ident,)))
    forget(str(out), ForgetRequest(image_ids=(gh_id,), source_prefixes=(tar_prefix,)))
    gone_images = _q(
        f"select image_id from {{images}} where image_id = '{gh_id}' or starts_with(source_uri, '{tar_prefix}')", out
    )
    assert gone_images == []
    before = (
        _q("select image_id, status from {images} order by all", out),
        _q("select face_id from {faces} order by all", out),
    )

    run(archive.run_config(arch.inputs, out, "night2", "2026-11-02"))  # incremental: nothing new
    run(archive.run_config(arch.inputs, out, "night3", "2026-11-03", full=True))  # everything read and detected again
    after = (
        _q("select image_id, status from {images} order by all", out),
        _q("select face_id from {faces} order by all", out),
    )
    assert after == before
    ids = "(" + ",".join(f"'{f}'" for f in faces) + ")"
    for table in ("faces", "face_identity", "face_outliers"):
        if list(out.glob(f"{table}/**/*.parquet")):  # too few faces left to train DROCC on: no scores
            assert _q(f"select count(*) from {{{table}}} where face_id in {ids}", out) == [(0,)], table
    assert _q(
        f"select count(*) from {{images}} where image_id = '{gh_id}' or starts_with(source_uri, '{tar_prefix}')", out
    ) == [(0,)]


def test_cli_forget_prints_one_line_errors(output, capsys):
    from facepipe.cli import main

    _, out = output
    assert main(["forget", "--output", str(out), "--identity-id", "no-such-identity"]) == 2
    assert "nothing in" in capsys.readouterr().err
    assert main(["forget", "--output", str(out)]) == 2
    assert "nothing to forget" in capsys.readouterr().err
    ident, _ = _biggest_identity(out)
    assert main(["forget", "--output", str(out), "--identity-id", ident, "--request-id", "cli-1"]) == 0
    assert "audit record" in capsys.readouterr().out and (Path(out) / "_audit" / "cli-1.json").is_file()
