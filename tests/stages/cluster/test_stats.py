"""An identity keeps the last snapshot's centroid only where its faces are the snapshot's, each
still at its recorded distance (facepipe.stages.cluster.stats): the centroids are those a sum over
every face gives, bit for bit, and a face re-extracted with another embedding is never missed."""

import duckdb
import numpy as np
import pyarrow.parquet as pq

from facepipe.stages.cluster.stage import ClusterConfig, run_cluster
from facepipe.stages.cluster.stats import Kept, distances, identity_stats
from testbed.cluster_faces import face_ids, faces_table, people, write_faces


def _stats(labels, x, kept=None):
    n = len(x)
    return identity_stats(labels, x, np.linspace(0.5, 0.9, n), np.arange(n) % 5, kept)


def test_kept_centroids_are_taken_only_where_every_face_is_at_its_recorded_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 128)).astype(np.float32)
    labels = rng.integers(-1, 400, len(x))
    full = _stats(labels, x)
    recorded = distances(x, full)
    moved = x.copy()
    moved[7] += 0.01  # re-extracted: another embedding under the same face id
    kept = Kept(full.labels[::2], full.centroid[::2], recorded)  # half the identities offered
    st = _stats(labels, moved, kept)
    want = _stats(labels, moved)
    assert np.array_equal(st.centroid, want.centroid)  # face 7's identity summed anew, like the rest
    assert np.array_equal(distances(moved, st), distances(moved, want), equal_nan=True)
    wrong = Kept(full.labels, full.centroid + 1, recorded)  # stale centroids: every face is elsewhere
    assert np.array_equal(_stats(labels, x, wrong).centroid, full.centroid)


def test_a_night_keeps_no_centroid_of_a_face_whose_embedding_changed(tmp_path):
    """Night 2 re-writes one old face with another embedding under its id (its image replaced at
    the same path) and adds faces: every identity's centroid is still its faces' mean, every
    face's distance its distance to it."""
    x, _ = people(40, 5, seed=4)
    fids, out = face_ids(len(x)), tmp_path / "out"
    row = np.arange(len(x))
    old = (row % 5 != 4) | (row // 5 % 2 == 1)  # odd people's faces are all there on night 1
    write_faces(out, "2026-11-01", [f for f, o in zip(fids, old) if o], x[old])
    run_cluster(str(out), "2026-11-01", "n1", ClusterConfig())
    changed = x[old].copy()
    changed[np.flatnonzero(old).tolist().index(5)] += np.float32(0.02)  # person 1's: no new face joins
    pq.write_table(
        faces_table([f for f, o in zip(fids, old) if o], changed), f"{out}/faces/dt=2026-11-01/part-2026-11-01.parquet"
    )
    write_faces(out, "2026-11-02", [f for f, o in zip(fids, old) if not o], x[~old])
    s = run_cluster(str(out), "2026-11-02", "n2", ClusterConfig())
    assert s["mode"] == "incremental"
    rows = duckdb.sql(
        f"select fi.identity_id, f.embedding, fi.distance, i.centroid"
        f" from read_parquet('{out}/face_identity/*/*.parquet') fi"
        f" join read_parquet('{out}/faces/*/*.parquet') f using (face_id)"
        f" join read_parquet('{out}/identities/*/*.parquet') i using (identity_id)"
    ).fetchall()
    emb = np.array([r[1] for r in rows], np.float32)
    cent = np.array([r[3] for r in rows], np.float32)
    ident = np.array([r[0] for r in rows])
    for i in np.unique(ident):
        mine = ident == i
        assert np.abs(emb[mine].astype(np.float64).mean(0) - cent[mine][0]).max() < 1e-6
    assert np.abs(np.array([r[2] for r in rows]) - np.linalg.norm(emb - cent, axis=1)).max() < 1e-5
    assert len(rows) == len(x)


def test_an_unreadable_identities_snapshot_costs_time_not_the_night(tmp_path):
    """The kept centroids are an optimisation: when the last ``identities`` file cannot be read (a
    torn file: the output leaves it out of the table), the night sums every centroid and its
    tables are those of a readable snapshot."""
    x, _ = people(30, 4, seed=6)
    fids = face_ids(len(x))
    outs = {}
    for how in ("readable", "damaged"):
        out = tmp_path / how / "out"
        write_faces(out, "2026-11-01", fids[::2], x[::2])
        run_cluster(str(out), "2026-11-01", "n1", ClusterConfig())
        if how == "damaged":
            for f in (out / "identities").rglob("*.parquet"):
                f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # a torn file
        write_faces(out, "2026-11-02", fids[1::2], x[1::2])
        assert run_cluster(str(out), "2026-11-02", "n2", ClusterConfig())["mode"] == "incremental"
        outs[how] = {
            t: duckdb.sql(f"select * exclude (run_id) from read_parquet('{out}/{t}/*/*.parquet') order by 1").fetchall()
            for t in ("identities", "face_identity")
        }
    assert outs["readable"] == outs["damaged"]


def test_representative_is_the_highest_score_ties_to_the_earliest_face():
    """An identity's representative face: the highest detection score, ties (and all-NaN scores)
    to the earliest row, a NaN never above a number -- what a lexsort by (identity, -score) picks."""
    rng = np.random.default_rng(4)
    n = 50_000
    labels = rng.integers(-1, 4_000, n)
    score = rng.choice(np.array([0.5, 0.7, 0.9, np.nan], np.float32), n)  # many ties
    score[labels == 7] = np.nan  # one identity of NaN scores only
    st = identity_stats(labels, rng.normal(size=(n, 4)).astype(np.float32), score, np.zeros(n, np.int64))
    ok = np.flatnonzero(labels >= 0)
    _, inv, counts = np.unique(labels[ok], return_inverse=True, return_counts=True)
    key = np.where(np.isnan(score[ok]), np.inf, -score[ok])  # NaN last
    first = np.lexsort((ok, key, inv))[np.r_[0, np.cumsum(counts)[:-1]]]
    assert np.array_equal(st.representative, ok[first])
