"""Human corrections of the identities are kept: a merge, a face moved out and a name given by a
person hold on every later night, incremental or ``--full``; they are applied in their own order
(never the files'), a cannot-link always wins over a must-link, they are recorded in
``identity_events``, wait while their faces are not clustered, and ``facepipe correct`` writes
them (real Parquet tables, the stage run for real; the faces are synthetic people)."""

import datetime as dt
import shutil
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facepipe.stages.cluster import corrections
from facepipe.stages.cluster.constraints import apply_corrections
from facepipe.stages.cluster.stage import ClusterConfig, run_cluster
from testbed.cluster_faces import face_ids as _faces
from testbed.cluster_faces import people
from testbed.cluster_faces import write_faces as _write_faces

FULL = ClusterConfig(full=True)


def _ids(out) -> dict:
    return dict(
        duckdb.sql(f"select face_id, identity_id from read_parquet('{out}/face_identity/*/*.parquet')").fetchall()
    )


def _events(out, run_id: str = "") -> list[tuple]:
    """The events of every run, or of ``run_id``."""
    return duckdb.sql(
        "select event, old_ids, new_ids, face_ids, correction_ids "
        f"from read_parquet('{out}/identity_events/*/*.parquet') where '{run_id}' in ('', run_id)"
    ).fetchall()


@pytest.fixture
def archive(tmp_path):
    """Night one of 6 synthetic people x 5 faces, clustered: (output, face ids, embeddings, people)."""
    x, who = people(6, 5, seed=11)
    fids = _faces(len(x))
    out = tmp_path / "out"
    _write_faces(out, "2026-11-01", fids, x)
    run_cluster(str(out), "2026-11-01", "n1", ClusterConfig())
    ids = _ids(out)
    assert len({ids[f] for f in fids}) == 6  # the people as they are
    return out, fids, x, who


def _person(fids, who, p):
    return [f for f, w in zip(fids, who) if w == p]


def test_a_merge_holds_on_the_next_nights_and_on_a_full_run(archive):
    out, fids, x, who = archive
    a, b = _person(fids, who, 0), _person(fids, who, 1)
    ids = _ids(out)
    corrections.record(str(out), corrections.requested(str(out), "merge", [ids[a[0]], ids[b[0]]], author="t"))
    s = run_cluster(str(out), "2026-11-02", "n2", ClusterConfig())
    merged = _ids(out)
    assert len({merged[f] for f in a + b}) == 1 and s["corrections"]["in_force"] == 1
    assert merged[a[0]] in (ids[a[0]], ids[b[0]])  # one of the two ids lives on
    [merge] = [e for e in _events(out) if e[0] == "merge"]
    assert sorted(merge[1]) == sorted([ids[a[0]], ids[b[0]]]) and len(merge[4]) == 1
    # a third night adds faces of person 0 and 1; then everything is re-clustered from scratch
    more, _ = people(6, 5, seed=11)
    _write_faces(out, "2026-11-03", [f"late{i:03d}" for i in range(10)], more[:10] + 0.001)
    run_cluster(str(out), "2026-11-03", "n3", ClusterConfig())
    run_cluster(str(out), "2026-11-03", "n4", FULL)
    final = _ids(out)
    assert len({final[f] for f in a + b}) == 1 and final[a[0]] == merged[a[0]]


def test_a_face_moved_out_stays_out_even_when_re_clustered(archive):
    out, fids, x, who = archive
    p = _person(fids, who, 2)
    ids = _ids(out)
    corrections.record(str(out), corrections.requested(str(out), "split", faces=[p[3]]))
    run_cluster(str(out), "2026-11-02", "n2", ClusterConfig())
    after = _ids(out)
    assert after[p[3]] != ids[p[3]] and all(after[f] == ids[f] for f in p if f != p[3])
    split = [e for e in _events(out) if e[0] == "split"]
    assert split and split[0][3] == [p[3]] and split[0][4]
    run_cluster(str(out), "2026-11-02", "n3", FULL)
    full = _ids(out)
    assert full[p[3]] != full[p[0]] and len({full[f] for f in p if f != p[3]}) == 1


def test_a_name_is_kept_with_the_identity_and_recorded_once(archive):
    out, fids, x, who = archive
    p = _person(fids, who, 4)
    ident = _ids(out)[p[0]]
    corrections.record(str(out), corrections.requested(str(out), "name", [ident], name="Ada Lovelace"))
    run_cluster(str(out), "2026-11-02", "n2", ClusterConfig())
    q = f"select identity_id, name from read_parquet('{out}/identities/*/*.parquet') where name is not null"
    assert duckdb.sql(q).fetchall() == [(ident, "Ada Lovelace")]
    assert [e[0] for e in _events(out)] == ["name"]
    run_cluster(str(out), "2026-11-02", "n3", FULL)
    assert duckdb.sql(q).fetchall() == [(ident, "Ada Lovelace")]
    assert [e[0] for e in _events(out, "n3") if e[0] == "name"] == []  # the name did not change


def test_a_cannot_link_wins_and_the_order_of_the_files_does_not_matter(archive, tmp_path):
    """A merge of two people and a later "this face is not that person" between them: the merge
    is refused, whatever order the correction files come in or are named."""
    out, fids, x, who = archive
    a, b = _person(fids, who, 0), _person(fids, who, 1)
    t0 = dt.datetime(2026, 11, 5, tzinfo=dt.timezone.utc)
    same = corrections.correction_rows("same", [(a[0], b[0])], now=t0)
    apart = corrections.correction_rows("different", [(b[1], a[1])], now=t0 + dt.timedelta(minutes=1))
    results = []
    for k, order in enumerate([(same, apart), (apart, same)]):
        o = tmp_path / f"o{k}"
        shutil.copytree(out, o)
        (o / "corrections").mkdir(exist_ok=True)
        for j, rows in enumerate(order):  # listed in this order: part-a first
            pq.write_table(rows, o / "corrections" / f"part-{'ab'[j]}.parquet")
        s = run_cluster(str(o), "2026-11-02", "n2", ClusterConfig())
        assert s["corrections"]["refused"] == same.column("correction_id").to_pylist()
        results.append(_ids(o))
    assert results[0] == results[1]
    assert results[0][a[0]] != results[0][b[0]]


def test_a_merge_that_would_join_two_faces_of_one_image_is_refused():
    x, _ = people(2, 3, seed=3)
    fids = _faces(6)
    labels = np.array([0, 0, 0, 1, 1, 1])
    image_ids = np.array(["i0", "i1", "i2", "i0", "i4", "i5"], object)  # faces 0 and 3 share an image
    rows = corrections.correction_rows("same", [(fids[1], fids[4])])
    res = apply_corrections(fids, labels, image_ids, rows)
    assert (res.labels == labels).all() and res.conflicts == rows.column("correction_id").to_pylist()
    ok = apply_corrections(fids, labels, np.array([f"i{i}" for i in range(6)], object), rows)
    assert len(set(ok.labels.tolist())) == 1 and not ok.conflicts


def test_a_correction_waits_while_its_face_is_not_clustered():
    fids = _faces(4)
    rows = corrections.correction_rows("same", [(fids[0], "gone-face")])
    res = apply_corrections(fids, np.array([0, 0, 1, 1]), None, rows)
    assert res.waiting == 1 and res.in_force == 0 and (res.labels == [0, 0, 1, 1]).all()


def test_forget_erases_the_corrections_that_name_its_faces(archive):
    from facepipe.tools import erase

    out, fids, x, who = archive
    p = _person(fids, who, 5)
    ident = _ids(out)[p[0]]
    corrections.record(str(out), corrections.requested(str(out), "name", [ident], name="Someone"))
    erase.forget(str(out), erase.ForgetRequest((ident,), (), (), "req-1", "t", "test").resolved())
    assert corrections.load(str(out)) is None or corrections.load(str(out)).num_rows == 0


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "correct", *args], capture_output=True, text=True, timeout=300
    )


def test_the_correct_command_records_applies_and_refuses_in_one_line(archive):
    out, fids, x, who = archive
    ids = _ids(out)
    a, b = _person(fids, who, 0), _person(fids, who, 3)
    r = _cli("merge", ids[a[0]], ids[b[0]], "--output", str(out), "--dt", "2026-11-02", "--note", "ticket 7")
    assert r.returncode == 0, r.stderr
    assert "recorded 1 correction(s)" in r.stdout and "corrections: 1 in force" in r.stdout
    assert len({_ids(out)[f] for f in a + b}) == 1
    [(note,)] = duckdb.sql(f"select note from read_parquet('{out}/corrections/*.parquet')").fetchall()
    assert note == "ticket 7"
    bad = _cli("merge", "id-nope", ids[a[0]], "--output", str(out))
    assert bad.returncode == 2 and "no identity id-nope" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    r = _cli("name", _ids(out)[b[1]], "--name", "Grace", "--output", str(out), "--dt", "2026-11-02")
    assert r.returncode == 0, r.stderr
    # two corrections the same day: each clustering run keeps its events (its own run id)
    assert {e[0] for e in _events(out)} >= {"merge", "name"}
    r = _cli("name", _ids(out)[a[0]], "--name", "Hopper", "--output", str(out), "--no-apply")
    assert r.returncode == 0 and "not applied yet" in r.stdout


def test_a_correction_written_with_sql_as_the_docs_show_is_honoured(archive):
    """docs/warehouse.md's DuckDB COPY of a `same` row, run as written with two face ids."""
    import re
    from pathlib import Path

    out, fids, x, who = archive
    a, b = _person(fids, who, 1), _person(fids, who, 2)
    doc = (Path(__file__).parents[3] / "docs" / "warehouse.md").read_text()
    [sql] = [q for q in re.findall(r"```sql\n(.*?)```", doc, re.S) if "COPY" in q]
    (out / "corrections").mkdir(exist_ok=True)  # as the docs say, on a local disk
    duckdb.sql(sql.replace("'OUT/", f"'{out}/").replace("FACE_ID_A", a[0]).replace("FACE_ID_B", b[0]))
    s = run_cluster(str(out), "2026-11-02", "n2", ClusterConfig())
    assert s["corrections"]["in_force"] == 1 and len({_ids(out)[f] for f in a + b}) == 1


def test_a_file_that_is_not_a_corrections_table_stops_the_clustering_before_it_writes(archive, tmp_path):
    """A corrections file written by hand or by a UI that is not Parquet, or whose row lacks what
    its kind needs, is the user's to fix: `facepipe cluster`, `facepipe correct` and `facepipe run`
    say so in one line naming the file (exit 2) before anything is written -- never ignored (it
    could be the split someone made) and never a traceback."""
    out, fids, x, who = archive
    before = _ids(out)
    bad = out / "corrections" / "part-by-hand.parquet"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(b"not parquet")
    lacking = corrections.correction_rows("same", [(fids[0], fids[9])]).set_column(
        3, "other_face_id", pa.array([None], pa.string())
    )
    for content in ("garbage", lacking):
        if content != "garbage":
            bad.unlink()
            pq.write_table(content, bad)
        for args in (
            ["cluster", "--output", str(out)],
            ["correct", "name", before[fids[0]], "--name", "X", "-o", str(out)],
        ):
            r = subprocess.run(
                [sys.executable, "-m", "facepipe.cli", *args], capture_output=True, text=True, timeout=300
            )
            assert r.returncode == 2 and "part-by-hand.parquet" in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert _ids(out) == before and list((out / "corrections").iterdir()) == [bad]
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "x.png").write_bytes(b"\x89PNG")
    r = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "run", str(photos), "--output", str(out), "--executor", "local"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "part-by-hand.parquet" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(out.glob("images/*/*.parquet"))  # nothing extracted
