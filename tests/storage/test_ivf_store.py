"""The cluster stage's inverted file kept in the output (facepipe.storage.ivf_store): trained on
the first night, a night adds only its own faces, the same identities as an index built afresh,
a crash between the snapshot and the index heals on the next night, trained again when the
settings change or the cells drift, encrypted like the embeddings."""

import dataclasses

import numpy as np
import pytest

from facepipe.stages.cluster.graph import IndexConfig
from facepipe.stages.cluster.stage import ClusterConfig, run_cluster
from facepipe.storage import ivf_store
from facepipe.storage.output import Output
from testbed.cluster_faces import face_ids, people, write_faces

#: the ivf backend from 500 faces (the default switches at 20,000), 64 cells
CFG = ClusterConfig(threshold=0.45, index=IndexConfig(exact_max=500, nlist=64, nprobe=8))


def _archive(tmp_path, n_people=300, per=8):
    x, y = people(n_people, per, seed=3)
    fids = face_ids(len(x))
    night = np.random.default_rng(0).random(len(x)) < 0.9
    write_faces(tmp_path, "2026-11-01", [f for f, n in zip(fids, night) if n], x[night])
    return x, fids, night


def _ids(out):
    import duckdb

    sql = f"select face_id, identity_id from read_parquet('{out}/face_identity/*/*.parquet')"
    return dict(duckdb.sql(sql).fetchall())


def _groups(m):
    g = {}
    for f, i in m.items():
        g.setdefault(i, set()).add(f)
    return sorted(map(sorted, g.values()))


def test_a_night_adds_its_faces_to_the_kept_cells_and_groups_as_a_fresh_index(tmp_path):
    x, fids, night = _archive(tmp_path / "a")
    s1 = run_cluster(str(tmp_path / "a"), "2026-11-01", "n1", CFG)
    assert s1["index"]["backend"] == "ivf" and not s1["index"]["kept"] and s1["index"]["trained"]
    assert s1["index"]["assigned"] == night.sum() == s1["index"]["added"]
    write_faces(tmp_path / "a", "2026-11-02", [f for f, n in zip(fids, night) if not n], x[~night])
    s2 = run_cluster(str(tmp_path / "a"), "2026-11-02", "n2", CFG)
    assert s2["index"]["kept"] and not s2["index"]["trained"]
    assert s2["index"]["assigned"] == (~night).sum() == s2["index"]["added"]
    # the identities the new faces touch are looked at through their kept lists: only the new
    # faces are searched
    assert s2["index"]["lists_kept"] == night.sum() and s2["region"] > (~night).sum()
    assert s2["index"]["searched"] == (~night).sum() < s2["index"]["lists_changed"]
    from facepipe.summary import cluster_lines

    line = "".join(cluster_lines(s2))
    assert f"64 cells kept from the last night, {(~night).sum()} faces added, {(~night).sum()} faces searched" in line
    out = Output.open(str(tmp_path / "a"))
    assert len(out.part_files("_index/quantizer")) == 1 and len(out.part_files("_index/cells")) == 2
    assert len(out.part_files("_index/lists")) == 2
    # the same nights with the index dropped before night 2: trained afresh, same identities
    _archive(tmp_path / "b")
    run_cluster(str(tmp_path / "b"), "2026-11-01", "n1", CFG)
    Output.open(str(tmp_path / "b")).fs.delete_dir(str(tmp_path / "b" / "_index"))
    write_faces(tmp_path / "b", "2026-11-02", [f for f, n in zip(fids, night) if not n], x[~night])
    assert run_cluster(str(tmp_path / "b"), "2026-11-02", "n2", CFG)["index"]["trained"]
    assert _groups(_ids(tmp_path / "a")) == _groups(_ids(tmp_path / "b"))


def test_a_crash_before_the_index_is_published_heals_on_the_next_night(tmp_path, monkeypatch):
    """The snapshot lands, the index publish does not: the old index stays whole, and the next
    run finds the faces it lacks, assigns and adds them."""
    x, fids, night = _archive(tmp_path)
    run_cluster(str(tmp_path), "2026-11-01", "n1", CFG)
    write_faces(tmp_path, "2026-11-02", [f for f, n in zip(fids, night) if not n], x[~night])
    real = Output.publish

    def crash(self, run_id, staged, tables=("images", "faces"), **kw):
        if tables == (ivf_store.INDEX,):
            raise OSError("the node died")
        return real(self, run_id, staged, tables, **kw)

    monkeypatch.setattr(Output, "publish", crash)
    with pytest.raises(OSError):
        run_cluster(str(tmp_path), "2026-11-02", "n2", CFG)
    monkeypatch.setattr(Output, "publish", real)
    out = Output.open(str(tmp_path))
    assert len(out.part_files("_index/cells")) == 1  # the old index, whole
    s = run_cluster(str(tmp_path), "2026-11-02", "n2", CFG)
    assert s["index"]["kept"] and s["index"]["added"] == (~night).sum()
    assert len(out.part_files("_index/quantizer")) == 1 and len(out.part_files("_index/cells")) == 2
    # the snapshot already placed them, so nothing searched them to cluster: they were searched
    # to go into the kept lists all the same (else later nights' lists would never know them)
    assert s["placed"] == 0 and s["index"]["searched"] == (~night).sum() < s["index"]["lists_changed"]


def test_other_settings_or_drifted_cells_train_the_index_again(tmp_path):
    x, fids, night = _archive(tmp_path)
    run_cluster(str(tmp_path), "2026-11-01", "n1", CFG)
    other = dataclasses.replace(CFG, index=dataclasses.replace(CFG.index, nprobe=4))
    s = run_cluster(str(tmp_path), "2026-11-01", "n1", other)
    assert s["index"]["trained"] and not s["index"]["kept"]
    out = Output.open(str(tmp_path))
    assert len(out.part_files("_index/quantizer")) == 1 and len(out.part_files("_index/cells")) == 1
    # night 2: as many faces again, all near one person -- the cells' balance drifts
    crowd = x[0] + np.random.default_rng(1).normal(size=(int(night.sum()), x.shape[1])).astype(np.float32) * 0.01
    write_faces(tmp_path, "2026-11-02", [f"crowd{i:05d}" for i in range(len(crowd))], crowd)
    s = run_cluster(str(tmp_path), "2026-11-02", "n2", other)
    assert s["index"]["trained"]


def test_the_imbalance_factor_is_one_for_even_cells():
    assert ivf_store.imbalance(np.repeat(np.arange(4), 5), 4) == 1.0
    assert ivf_store.imbalance(np.zeros(20, int), 4) == 4.0


def _index_held(o):
    """{face_id: (slot, own cell)} of the stored index of the output ``o``."""
    import pyarrow as pa

    cells = pa.concat_tables([o.read_table(p) for p in o.part_files("_index/cells")])
    probes = cells.column("probes").combine_chunks().flatten().to_numpy().reshape(cells.num_rows, -1)
    return dict(zip(cells.column("face_id").to_pylist(), zip(cells.column("slot").to_pylist(), probes[:, 0])))


def _index(out):
    """The index as stored: {face_id: (slot, own cell)}, the centroids by cell, and the lists
    {slot: named slots}."""
    o = Output.open(str(out))
    held = _index_held(o)
    (q,) = [o.read_table(p).sort_by("cell") for p in o.part_files("_index/quantizer")]
    centroids = np.stack(q.column("centroid").to_numpy(zero_copy_only=False))
    lists = {}
    for p in o.part_files("_index/lists"):
        t = o.read_table(p)
        nbr = t.column("nbr").combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
        lists.update(zip(t.column("slot").to_pylist(), map(set, nbr.tolist())))
    return held, centroids, lists


def _sharing_cells(ids, held):
    """The first identity (by its first face) whose cells keep faces of others, and its faces."""
    faces = {}
    for f, i in sorted(ids.items()):
        faces.setdefault(i, set()).add(f)
    for person, mine in faces.items():
        cells = {held[f][1] for f in mine}
        if len(mine) >= 2 and all(any(c == held[g][1] for g in held if g not in mine) for c in cells):
            return person, mine
    raise AssertionError("every identity fills its cells")


def test_forget_takes_the_erased_faces_out_of_the_index_and_keeps_it(tmp_path):
    """An erasure rewrites only what names an erased face: its cells row, every list naming it,
    the centroid of its cell (the mean of the faces the cell keeps, so no erased embedding stays
    in one; the other centroids as they were). The next night keeps the index -- not a first
    night again -- and groups the faces as a night whose index was dropped does."""
    import shutil

    from facepipe.tools.erase import ForgetRequest, forget

    x, fids, night = _archive(tmp_path / "a")
    run_cluster(str(tmp_path / "a"), "2026-11-01", "n1", CFG)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    held, centroids, lists = _index(tmp_path / "a")
    person, erased = _sharing_cells(_ids(tmp_path / "a"), held)
    for out in ("a", "b"):
        audit = forget(str(tmp_path / out), ForgetRequest(identity_ids=(person,), request_id="erase-1"))
        assert not [f for f in audit["files_deleted"] if f.startswith("_index/")]
    held2, centroids2, lists2 = _index(tmp_path / "a")
    assert set(held2) == set(held) - erased
    gone = {held[f][0] for f in erased}
    assert not gone & set(lists2) and not any(gone & named for named in lists2.values())
    assert set(lists2) == {s for s, named in lists.items() if s not in gone and not gone & named}
    touched = {held[f][1] for f in erased}
    row = {f: i for i, f in enumerate(fids)}
    for c in range(len(centroids)):
        if c in touched:
            kept = [row[f] for f, (_, cell) in held2.items() if cell == c]
            np.testing.assert_allclose(centroids2[c], x[kept].astype(np.float64).mean(0), atol=1e-6)
        else:
            np.testing.assert_array_equal(centroids2[c], centroids[c])
    # night 2, over the index kept and over the same output with its index dropped
    Output.open(str(tmp_path / "b")).fs.delete_dir(str(tmp_path / "b" / "_index"))
    for out in ("a", "b"):
        write_faces(tmp_path / out, "2026-11-02", [f for f, n in zip(fids, night) if not n], x[~night])
    s = run_cluster(str(tmp_path / "a"), "2026-11-02", "n2", CFG)
    assert s["index"]["kept"] and not s["index"]["trained"]
    assert run_cluster(str(tmp_path / "b"), "2026-11-02", "n2", CFG)["index"]["trained"]
    assert not erased & set(_ids(tmp_path / "a"))
    assert _groups(_ids(tmp_path / "a")) == _groups(_ids(tmp_path / "b"))


def test_forget_that_empties_a_cell_drops_the_index_and_the_next_night_trains_it_again(tmp_path):
    """A cell left with no face has no mean to take in place of its centroid, which held only
    erased faces: the whole index goes, as it does for a small archive's few-face cells."""
    from facepipe.tools.erase import ForgetRequest, forget

    x, fids, night = _archive(tmp_path)
    run_cluster(str(tmp_path), "2026-11-01", "n1", CFG)
    held, _, _ = _index(tmp_path)
    ids = _ids(tmp_path)
    alone = next(
        i for i in sorted(set(ids.values()))
        if any(all(ids[g] == i for g in held if held[g][1] == held[f][1]) for f in held if ids[f] == i)
    )  # fmt: skip
    audit = forget(str(tmp_path), ForgetRequest(identity_ids=(alone,), request_id="erase-1"))
    dropped = sorted(f.split("/")[1] for f in audit["files_deleted"] if f.startswith("_index/"))
    assert dropped == ["cells", "lists", "quantizer"]
    assert not Output.open(str(tmp_path)).part_files("_index")
    s = run_cluster(str(tmp_path), "2026-11-01", "n2", CFG)
    assert s["index"]["trained"] and alone not in set(_ids(tmp_path).values())


def test_the_centroids_are_encrypted_like_the_embeddings(tmp_path):
    """In an encrypted output the quantizer's centroid column cannot be read without the key; the
    stage reads it through the key and keeps the index."""
    import base64
    import json
    import os

    import pyarrow.parquet as pq

    from facepipe.storage.crypto import EncryptionConfig

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({k: base64.b64encode(os.urandom(32)).decode() for k in ("footer", "bio")}))
    out = Output(str(tmp_path / "out"), EncryptionConfig("local", "footer", "bio", str(keys)))
    x, fids, night = _archive(tmp_path / "out")
    run_cluster(out, "2026-11-01", "n1", CFG)
    (quantizer,) = out.part_files("_index/quantizer")
    with pytest.raises(OSError):
        pq.read_table(quantizer, columns=["centroid"])
    assert pq.read_table(quantizer, columns=["cell"]).num_rows == 64
    # an erasure recomputes centroids in place: the rewritten quantizer is encrypted too
    from facepipe.tools.erase import ForgetRequest, forget

    person, _ = _sharing_cells(_ids(tmp_path / "out"), _index_held(out))
    forget(out, ForgetRequest(identity_ids=(person,), request_id="erase-1"))
    (quantizer,) = out.part_files("_index/quantizer")
    with pytest.raises(OSError):
        pq.read_table(quantizer, columns=["centroid"])
    write_faces(tmp_path / "out", "2026-11-02", [f for f, n in zip(fids, night) if not n], x[~night])
    assert run_cluster(out, "2026-11-02", "n2", CFG)["index"]["kept"]


def test_a_night_that_finds_many_cells_files_rewrites_them_as_one(tmp_path, monkeypatch):
    """Every night appends a cells file, and opening reads them all: at COMPACT_FILES the night
    writes one file of every face instead (the quantizer as it was: nothing is trained again)."""
    monkeypatch.setattr(ivf_store, "COMPACT_FILES", 2)
    x, fids, night = _archive(tmp_path)
    run_cluster(str(tmp_path), "2026-11-01", "n1", CFG)
    rest = [i for i, n in enumerate(night) if not n]
    out = Output.open(str(tmp_path))
    for k, (dt, part) in enumerate((("2026-11-02", rest[: len(rest) // 2]), ("2026-11-03", rest[len(rest) // 2 :]))):
        write_faces(tmp_path, dt, [fids[i] for i in part], x[part])
        s = run_cluster(str(tmp_path), dt, f"n{k + 2}", CFG)
        assert s["index"]["kept"] and not s["index"]["trained"] and s["index"]["added"] == len(part)
        assert s["index"]["compacted"] == (k == 1) and len(out.part_files("_index/cells")) == (2, 1)[k]
    assert len(out.part_files("_index/quantizer")) == 1
    s = run_cluster(str(tmp_path), "2026-11-03", "n4", CFG)
    assert s["index"]["kept"] and s["index"]["assigned"] == 0  # every face held in the one file


def test_an_index_file_damaged_from_outside_is_trained_again_not_a_failed_night(tmp_path):
    """The index is a cache of the faces: a cells file cut short (a disk, a bad copy) makes the
    night train it again and replace every file of it, never fail."""
    x, fids, night = _archive(tmp_path)
    run_cluster(str(tmp_path), "2026-11-01", "n1", CFG)
    out = Output.open(str(tmp_path))
    (cells,) = out.part_files("_index/cells")
    with open(cells, "r+b") as f:
        f.truncate(100)
    write_faces(tmp_path, "2026-11-02", [f for f, n in zip(fids, night) if not n], x[~night])
    s = run_cluster(str(tmp_path), "2026-11-02", "n2", CFG)
    assert s["index"]["trained"] and cells not in out.part_files("_index/cells")
    assert len(out.part_files("_index/cells")) == 1 and len(_ids(tmp_path)) == len(fids)
