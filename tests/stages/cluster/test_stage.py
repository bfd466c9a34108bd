"""Identity ids: deterministic, reused by greatest overlap, stable from night to night; merges and
splits recorded as events; the stage reads and publishes real Parquet tables."""

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facepipe.stages.cluster.graph import IndexConfig
from facepipe.stages.cluster.naming import assign_ids, encode_previous, identity_events, name_clusters, new_identity_id
from facepipe.stages.cluster.stage import ClusterConfig, cluster_embeddings, cluster_incremental, run_cluster
from testbed.cluster_faces import DIM, people
from testbed.cluster_faces import face_ids as _faces
from testbed.cluster_faces import write_faces as _write_faces


def _night(x, face_ids, previous, cfg=None):
    """One incremental night at the function level -> (face -> id, events)."""
    cfg = cfg or ClusterConfig()
    code, old = encode_previous(face_ids, previous)
    labels = cluster_incremental(x, code, len(old), cfg).labels
    name = name_clusters(face_ids, labels, code, old)
    ids = {f: (name[int(lab)] if lab >= 0 else None) for f, lab in zip(face_ids, labels)}
    return ids, identity_events(code, old, labels, name, face_ids=face_ids)


def _groups(ids: dict) -> set[frozenset]:
    g: dict = {}
    for f, i in ids.items():
        g.setdefault(i, set()).add(f)
    return {frozenset(v) for v in g.values()}


def test_new_ids_are_deterministic_and_reuse_follows_overlap():
    faces = ["f1", "f2", "f3", "f4", "f5"]
    labels = np.array([0, 0, 1, 1, -1])
    first = assign_ids(faces, labels, {})
    assert first == [new_identity_id(["f1", "f2"])] * 2 + [new_identity_id(["f3", "f4"])] * 2 + [None]
    assert assign_ids(faces, labels, {}) == first
    # next night: f2 moved to the other cluster and f6 arrived; both ids survive by overlap
    prev = dict(zip(faces, first))
    again = assign_ids(["f1", "f2", "f3", "f4", "f6"], np.array([0, 1, 1, 1, 0]), prev)
    assert again == [first[0], first[2], first[2], first[2], first[0]]


def test_an_old_id_goes_to_one_cluster_only():
    prev = {"a": "id-old", "b": "id-old", "c": "id-old"}
    ids = assign_ids(["a", "b", "c"], np.array([0, 0, 1]), prev)  # a split
    assert ids[0] == ids[1] == "id-old" and ids[2] not in (None, "id-old")


def test_two_incremental_nights_equal_one_shot_and_keep_night_one_ids():
    """Night 1 sees half of every person's faces, night 2 the rest: the grouping equals one
    full clustering of everything, and no night-1 face changes id."""
    x, y = people(60, 6)
    fids = _faces(len(x))
    half = np.arange(len(x)) % 2 == 0
    first = [f for f, h in zip(fids, half) if h]
    labels1 = cluster_embeddings(x[half], ClusterConfig())
    night1 = dict(zip(first, assign_ids(first, labels1, {})))
    night2, events = _night(x, fids, night1)
    assert all(night2[f] == night1[f] for f in first)
    one_shot = dict(zip(fids, assign_ids(fids, cluster_embeddings(x, ClusterConfig()), {})))
    assert _groups(night2) == _groups(one_shot)
    assert _groups(night2) == _groups(dict(zip(fids, y.tolist())))
    assert events == []


def test_a_night_without_new_faces_changes_nothing():
    x, _ = people(20, 4)
    fids = _faces(len(x))
    night1 = dict(zip(fids, assign_ids(fids, cluster_embeddings(x, ClusterConfig()), {})))
    night2, events = _night(x, fids, night1)
    assert night2 == night1 and events == []


def test_new_faces_that_link_a_face_to_a_person_merge_them_and_the_event_is_recorded():
    """Night 1: a person (5 faces) and, 0.7 away, a lone face of them (its own identity). Night 2
    brings 6 faces between the two, 0.35 from each: the lone face joins the person, whose id
    stays; the event names both old ids and the six new faces that brought them together. An
    unrelated person is untouched."""
    rng = np.random.default_rng(0)
    e = rng.normal(size=DIM)
    e /= np.linalg.norm(e)
    tight = lambda c, m: c + rng.normal(size=(m, DIM)) * 0.1 / np.sqrt(2 * DIM)  # noqa: E731
    other, _ = people(1, 4, seed=5)
    x = np.concatenate([tight(np.zeros(DIM), 5), tight(e * 0.7, 1), other + 3.0, tight(e * 0.35, 6)]).astype(np.float32)
    fids = _faces(len(x))
    cut = ClusterConfig(threshold=0.45)  # the geometry wants a cut between 0.35 and 0.7
    night1 = dict(zip(fids[:10], assign_ids(fids[:10], cluster_embeddings(x[:10], cut), {})))
    person, lone, stranger = night1[fids[0]], night1[fids[5]], night1[fids[6]]
    assert len({person, lone, stranger}) == 3
    night2, events = _night(x, fids, night1, cut)
    assert {night2[f] for f in fids[:6] + fids[10:]} == {person}
    assert all(night2[f] == stranger for f in fids[6:10])
    assert events == [
        {"event": "merge", "old_ids": sorted([person, lone]), "new_ids": [person], "n_faces": 1, "face_ids": fids[10:]}
    ]


def test_a_full_recluster_splits_a_merged_identity_and_keeps_the_larger_part_its_id():
    """The previous snapshot put two people (6 and 3 faces) under one id; a full re-cluster
    separates them: the 6 keep the id, the 3 get a new one, and a split event says so."""
    x, y = people(2, 6)
    x, y = x[:9], y[:9]
    fids = _faces(9)
    prev = {f: "id-both" for f in fids}
    code, old = encode_previous(fids, prev)
    labels = cluster_embeddings(x, ClusterConfig(full=True))
    name = name_clusters(fids, labels, code, old)
    ids = [name[int(lab)] for lab in labels]
    assert ids[:6] == ["id-both"] * 6 and len(set(ids[6:])) == 1 and ids[6] != "id-both"
    assert identity_events(code, old, labels, name) == [
        {"event": "split", "old_ids": ["id-both"], "new_ids": ["id-both", ids[6]], "n_faces": 3, "face_ids": []}
    ]


def test_the_ivf_index_finds_the_same_identities_as_the_exact_graph():
    """FAISS IVF (forced on a small set) against exact kNN: identical clusters."""
    x, y = people(300, 5, seed=2)
    exact = cluster_embeddings(x, ClusterConfig(index=IndexConfig(backend="exact")))
    ivf = cluster_embeddings(x, ClusterConfig(index=IndexConfig(backend="ivf", nprobe=8)))
    assert (
        _groups(dict(enumerate(exact.tolist())))
        == _groups(dict(enumerate(ivf.tolist())))
        == _groups(dict(enumerate(y.tolist())))
    )


def test_unknown_method_or_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="not one of"):
        ClusterConfig(method="kmeans")
    with pytest.raises(ValueError, match="threshold"):
        ClusterConfig(threshold=0)
    with pytest.raises(ValueError, match="backend"):
        IndexConfig(backend="annoy")


def test_run_cluster_nightly_tables_and_rerun(tmp_path):
    """Two nights through the real stage on Parquet: night 2 is incremental, keeps night-1 ids,
    reads back in DuckDB; identities' first/last seen follow the partitions; rerunning night 2
    under its run id changes nothing and keeps its events."""
    x, y = people(30, 4, seed=3)
    fids = _faces(len(x))
    out = tmp_path / "out"
    _write_faces(out, "2026-11-01", fids[::2], x[::2])
    s1 = run_cluster(str(out), "2026-11-01", "n1", ClusterConfig())
    assert s1["mode"] == "full" and s1["identities"] == 30
    q = lambda sql: duckdb.sql(sql.replace("OUT", str(out))).fetchall()  # noqa: E731
    before = dict(q("select face_id, identity_id from read_parquet('OUT/face_identity/*/*.parquet')"))
    _write_faces(out, "2026-11-02", fids[1::2], x[1::2])
    s2 = run_cluster(str(out), "2026-11-02", "n2", ClusterConfig())
    assert (
        s2["mode"] == "incremental"
        and s2["placed"] == len(fids) // 2
        and s2["identities"] == 30
        and s2["reused_ids"] == 30
    )
    after = dict(q("select face_id, identity_id from read_parquet('OUT/face_identity/*/*.parquet')"))
    assert all(after[f] == before[f] for f in before) and len(after) == len(fids)
    assert _groups(after) == _groups(dict(zip(fids, y.tolist())))
    seen = q(
        "select min(first_seen_dt)::varchar, max(last_seen_dt)::varchar, sum(n_faces) from "
        "read_parquet('OUT/identities/*/*.parquet')"
    )
    assert seen == [("2026-11-01", "2026-11-02", len(fids))]
    assert q("select count(*), count(distinct identity_id) from read_parquet('OUT/identities/*/*.parquet')") == [
        (30, 30)
    ]
    dist = q(
        "select max(abs(fi.distance - list_distance(f.embedding, i.centroid)))"
        " from read_parquet('OUT/face_identity/*/*.parquet') fi join read_parquet('OUT/faces/*/*.parquet') f "
        "using (face_id)"
        " join read_parquet('OUT/identities/*/*.parquet') i using (identity_id)"
    )[0][0]
    assert dist < 1e-5
    s3 = run_cluster(str(out), "2026-11-02", "n2", ClusterConfig())
    assert s3["merges"] == s3["splits"] == 0 and s3["placed"] == 0
    assert dict(q("select face_id, identity_id from read_parquet('OUT/face_identity/*/*.parquet')")) == after


def test_events_are_published_once_and_survive_a_rerun_of_the_run(tmp_path):
    """A snapshot that merged two people, then `cluster --full`: one split row in
    identity_events; rerunning the same run id neither loses nor repeats it."""
    x, _ = people(2, 6, seed=4)
    fids = _faces(len(x))
    out = tmp_path / "out"
    _write_faces(out, "2026-11-01", fids, x)
    snap = out / "face_identity" / "dt=2026-11-01"
    snap.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "face_id": fids,
                "identity_id": ["id-both"] * len(fids),
                "distance": [0.0] * len(fids),
                "run_id": ["old"] * len(fids),
            }
        ),
        snap / "part-old-0.parquet",
    )
    for _ in range(2):
        s = run_cluster(str(out), "2026-11-02", "recluster", ClusterConfig(full=True))
        rows = duckdb.sql(
            "select event, old_ids, len(new_ids), n_faces, run_id, dt from "
            f"read_parquet('{out}/identity_events/*/*.parquet', hive_partitioning=true)"
        ).fetchall()
        assert rows == [("split", ["id-both"], 2, 6, "recluster", __import__("datetime").date(2026, 11, 2))]
    assert s["splits"] == 0  # the rerun found its own snapshot: nothing new to record


def test_a_new_identity_never_takes_an_old_id():
    """id-X was named after its smallest face f1. A re-cluster moves f1 out on its own while
    f2, f3 keep id-X: f1's new identity must get another id, not a second id-X."""
    x_id = new_identity_id(["f1"])
    prev = {"f1": x_id, "f2": x_id, "f3": x_id}
    ids = assign_ids(["f1", "f2", "f3"], np.array([0, 1, 1]), prev)
    assert ids[1] == ids[2] == x_id and ids[0] not in (None, x_id)
    assert assign_ids(["f1", "f2", "f3"], np.array([0, 1, 1]), prev) == ids


@pytest.mark.slow
def test_facepipe_cluster_command_places_new_faces_then_reclusters_with_full(tmp_path):
    """`facepipe cluster` as users run it: first run full, second incremental, `--full` again;
    a bad flag is one line, no traceback."""
    import subprocess
    import sys

    x, _ = people(10, 4, seed=6)
    fids = _faces(len(x))
    out = tmp_path / "out"
    _write_faces(out, "2026-11-01", fids, x)

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "facepipe.cli", "cluster", "--output", str(out), "--dt", "2026-11-02", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    first, second, full = cli(), cli(), cli("--full")
    assert all(r.returncode == 0 for r in (first, second, full)), first.stderr + second.stderr + full.stderr
    assert "10 identities over 40 faces" in first.stdout and "full: every face re-clustered" in first.stdout
    assert "incremental: 0 new or unplaced faces placed" in second.stdout
    assert "full: every face re-clustered" in full.stdout and "10 ids kept" in full.stdout
    bad = cli("--knn", "annoy")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_flagged_face_never_joins_or_bridges_two_identities(tmp_path):
    """Two people 0.7 apart (two identities) and, between them, 6 detections the outlier stage
    flagged, 0.35 from each. By default the flagged faces are left out (status 'outlier', no
    identity) and the two people stay two; with --cluster-outliers the junk bridges them into one."""
    from facepipe import schema

    rng = np.random.default_rng(0)
    e = rng.normal(size=DIM)
    e /= np.linalg.norm(e)
    tight = lambda c, m: c + rng.normal(size=(m, DIM)) * 0.1 / np.sqrt(2 * DIM)  # noqa: E731
    x = np.concatenate([tight(np.zeros(DIM), 6), tight(e * 0.7, 6), tight(e * 0.35, 6)]).astype(np.float32)
    fids = _faces(len(x))
    junk = fids[12:]
    for name, include in (("default", False), ("included", True)):
        out = tmp_path / name
        _write_faces(out, "2026-11-01", fids, x)
        part = out / "face_outliers" / "dt=2026-11-01"
        part.mkdir(parents=True)
        n = len(fids)
        flagged = pa.table(
            {
                "face_id": fids,
                "drocc_score": np.zeros(n, np.float32),
                "outlier_score": np.where([f in junk for f in fids], 5.0, -5.0).astype(np.float32),
                "is_outlier": [f in junk for f in fids],
                "threshold": np.zeros(n, np.float32),
                "model_id": ["drocc@test"] * n,
                "run_id": ["r1"] * n,
                "embedding_score": np.zeros(n, np.float32),
                "detail_score": np.zeros(n, np.float32),
                "reason": ["not a face" if f in junk else None for f in fids],
            },
            schema=schema.FACE_OUTLIERS,
        )
        pq.write_table(flagged, part / "part-r1.parquet")
        # the geometry wants a cut between 0.35 and 0.7
        summary = run_cluster(str(out), "2026-11-01", "r1", ClusterConfig(threshold=0.45, include_outliers=include))
        rows = duckdb.sql(
            f"select face_id, identity_id, status from read_parquet('{out}/face_identity/*/*.parquet')"
        ).fetchall()
        ident = {f: i for f, i, _ in rows}
        status = {f: s for f, _, s in rows}
        if include:
            assert ident[fids[0]] == ident[fids[6]] and summary["identities"] == 1  # bridged: the old behaviour
        else:
            assert summary["identities"] == 2 and summary["outliers_left_out"] == 6
            assert len({ident[f] for f in fids[:6]}) == 1 and len({ident[f] for f in fids[6:12]}) == 1
            assert ident[fids[0]] != ident[fids[6]]
            assert all(ident[f] is None and status[f] == "outlier" for f in junk)
            assert {status[f] for f in fids[:12]} == {"assigned"}


def test_the_same_faces_give_the_same_identities_in_any_order():
    """Identities depend on the embeddings only: 20 random orders of the same faces (ids and paths
    change the order the stage sees), and for a night the old identities numbered in another order
    (their ids are strings that follow paths too), give one partition, full and incremental;
    before the canonical order, Chinese Whispers' result followed the input order."""
    x, _ = people(40, 6, seed=3, spread=0.45, apart=0.8)  # close people: an order-sensitive case
    rng = np.random.default_rng(0)
    full, nightly = set(), set()
    prev = np.where(np.arange(len(x)) % 3 == 0, -1, np.arange(len(x)) // 6)  # a third of the faces new tonight
    for _ in range(20):
        perm = rng.permutation(len(x))
        lab = np.empty(len(x), np.int64)
        lab[perm] = cluster_embeddings(x[perm], ClusterConfig())
        full.add(frozenset(frozenset(np.flatnonzero(lab == v)) for v in set(lab.tolist())))
        renumber = rng.permutation(40)  # the old identities' codes in another order
        codes = np.where(prev >= 0, renumber[np.maximum(prev, 0)], -1)
        lab[perm] = cluster_incremental(x[perm], codes[perm], 40, ClusterConfig()).labels
        nightly.add(frozenset(frozenset(np.flatnonzero(lab == v)) for v in set(lab.tolist())))
    assert len(full) == 1 and len(nightly) == 1


def test_two_faces_of_one_image_are_never_one_identity():
    """Cannot-link: a face and its near-copy 0.1 apart in the same image (a poster behind a person,
    a mirror) are two identities; in two images they are one."""
    x, _ = people(2, 5, seed=1)
    twin = x[:1] + 0.1 / np.sqrt(DIM)
    xs = np.concatenate([x, twin]).astype(np.float32)
    images = np.array([f"img{i}" for i in range(len(x))] + ["img0"], object)
    lab = cluster_embeddings(xs, ClusterConfig(), image_ids=images)
    assert lab[0] != lab[-1] and len({lab[i] for i in range(5)}) == 1
    images[-1] = "img-other"
    lab = cluster_embeddings(xs, ClusterConfig(), image_ids=images)
    assert lab[0] == lab[-1]
    # tonight's face of an image already in an identity does not join it either
    prev = np.r_[np.zeros(5, np.int64), np.ones(5, np.int64), -1]
    images[-1] = "img0"
    res = cluster_incremental(xs, prev, 2, ClusterConfig(), image_ids=images)
    assert res.labels[-1] not in (res.labels[0], res.labels[5])


def test_faces_narrower_than_the_minimum_are_left_out(tmp_path):
    """--cluster-min-face: a face narrower than 40 px is not clustered (status 'too_small')."""
    x, _ = people(2, 4, seed=2)
    fids = _faces(len(x))
    _write_faces(tmp_path, "2026-11-01", fids, x)
    t = pq.read_table(next((tmp_path / "faces").rglob("*.parquet")))
    x2 = t.column("x2").to_numpy().copy()
    x2[0] = 30.0
    pq.write_table(
        t.set_column(t.schema.get_field_index("x2"), "x2", pa.array(x2, pa.float32())),
        next((tmp_path / "faces").rglob("*.parquet")),
    )
    summary = run_cluster(str(tmp_path), "2026-11-01", "r1", ClusterConfig())
    rows = dict(
        duckdb.sql(f"select face_id, status from read_parquet('{tmp_path}/face_identity/*/*.parquet')").fetchall()
    )
    assert rows[fids[0]] == "too_small" and summary["too_small"] == 1
    assert {rows[f] for f in fids[1:]} == {"assigned"}


def test_a_night_over_a_snapshot_of_no_identity_places_its_faces(tmp_path):
    """Night 1 clustered nobody (every face too small); night 2 brings faces that are clustered.
    The incremental night over that empty snapshot once failed looking up the rank of an identity
    (there were none): it places the faces."""
    x, _ = people(3, 4, seed=4)
    fids = _faces(len(x))
    _write_faces(tmp_path, "2026-11-01", fids[:6], x[:6])
    t = pq.read_table(next((tmp_path / "faces").rglob("*.parquet")))
    narrow = t.set_column(t.schema.get_field_index("x2"), "x2", pa.array(np.full(6, 10.0), pa.float32()))
    pq.write_table(narrow, next((tmp_path / "faces").rglob("*.parquet")))
    assert run_cluster(str(tmp_path), "2026-11-01", "r1", ClusterConfig())["identities"] == 0
    _write_faces(tmp_path, "2026-11-02", fids[6:], x[6:])
    s = run_cluster(str(tmp_path), "2026-11-02", "r2", ClusterConfig())
    assert s["mode"] == "incremental" and s["placed"] == 6 and s["identities"] == 2
