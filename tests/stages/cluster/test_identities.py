"""The identity tables' arithmetic (facepipe.stages.cluster.identities): an identity's centroid
is the float64 mean of its faces added in face-id order, bit for bit whichever way it is
computed (a faster sum must not move a published centroid), and the faces read back from the
output come sorted by face id whatever the files' order."""

import numpy as np

from facepipe.stages.cluster.identities import load_faces
from facepipe.stages.cluster.stats import identity_stats
from testbed.cluster_faces import face_ids, people, write_faces


def test_centroids_are_the_sequential_float64_means_bit_for_bit():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20_000, 128)).astype(np.float32)
    labels = rng.integers(-1, 3000, len(x))  # -1: unassigned, left out of every mean
    st = identity_stats(labels, x, rng.random(len(x)), rng.integers(0, 9, len(x)))
    for k in rng.choice(len(st.labels), 50, replace=False):
        total = np.zeros(128, np.float64)
        for row in np.flatnonzero(labels == st.labels[k]):  # in row order, one at a time
            total += x[row].astype(np.float64)
        assert np.array_equal(st.centroid[k], (total / st.counts[k]).astype(np.float32))
    none = identity_stats(np.full(3, -1), x[:3], np.zeros(3), np.zeros(3, int))
    assert none.centroid.shape == (0, 128)


def test_faces_are_read_sorted_by_face_id_with_their_own_embeddings(tmp_path):
    x, _ = people(50, 4, seed=2)
    fids = face_ids(len(x))
    perm = np.random.default_rng(0).permutation(len(x))
    half = len(x) // 2  # two files, each in a shuffled order
    write_faces(tmp_path, "2026-11-01", [fids[i] for i in perm[:half]], x[perm[:half]])
    write_faces(tmp_path, "2026-11-02", [fids[i] for i in perm[half:]], x[perm[half:]])
    fs = load_faces(str(tmp_path))
    assert fs.face_ids == sorted(fids)
    assert np.array_equal(fs.x, x[[fids.index(f) for f in fs.face_ids]])


def test_faces_of_another_embedder_are_left_out_and_every_column_follows_its_face(tmp_path):
    """The faces are read in two passes (ids, then the rest batch by batch into place): each face
    keeps its own embedding, image (numbered), width, score and day, and a minority embedder's faces (an
    older model's, in small row groups between the others) are not read as clustered."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, _ = people(60, 5, seed=3)
    fids = face_ids(len(x))
    perm = np.random.default_rng(1).permutation(len(x))
    write_faces(tmp_path, "2026-11-01", [fids[i] for i in perm[:100]], x[perm[:100]])
    other = pa.table(
        {
            "face_id": pa.array([f"zz-{i:03d}" for i in range(40)], pa.string()),
            "image_id": pa.array(["img-other"] * 40, pa.string()),
            "x1": pa.array(np.zeros(40), pa.float32()),
            "x2": pa.array(np.full(40, 7.0), pa.float32()),
            "det_score": pa.array(np.zeros(40), pa.float32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(40 * 128), pa.float32()), 128),
            "embedder": pa.array(["other@1"] * 40, pa.string()),
        }
    )
    (tmp_path / "faces" / "dt=2026-11-02").mkdir(parents=True)
    pq.write_table(other, tmp_path / "faces" / "dt=2026-11-02" / "part-a.parquet", row_group_size=7)
    write_faces(tmp_path, "2026-11-03", [fids[i] for i in perm[100:]], x[perm[100:]])
    fs = load_faces(str(tmp_path))
    assert fs.embedder == "dlib_resnet@test" and fs.face_ids == sorted(fids)
    row = {f: i for i, f in enumerate(fids)}
    assert np.array_equal(fs.x, x[[row[f] for f in fs.face_ids]])
    images = [f"img-{f}" for f in fs.face_ids]  # as numbers: equal where the image ids are
    numbered = set(zip(fs.image_ids.tolist(), images))
    assert len(numbered) == len(set(images)) == len(set(fs.image_ids.tolist())) and (fs.width == 100).all()
    day = {fids[i]: "2026-11-01" if k < 100 else "2026-11-03" for k, i in enumerate(perm)}
    assert fs.dt.tolist() == [np.datetime64(day[f], "D").item() for f in fs.face_ids]
    score = dict(zip([fids[i] for i in perm[:100]], np.linspace(0.9, 0.99, 100, dtype=np.float32)))
    assert all(fs.det_score[i] == score[f] for i, f in enumerate(fs.face_ids) if f in score)


def test_faces_left_out_are_recorded_with_their_reason_and_never_read(tmp_path):
    """Faces ``exclude`` names (the outlier stage's flags) and faces narrower than the minimum are
    left out (now when the ids are read: a copy of the embeddings to drop them was 5 GB at 10^7
    faces), each recorded with its reason (the exclusion's first), the others read in face-id
    order with their own embeddings; an excluded face the archive lacks is not recorded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, _ = people(20, 4, seed=5)
    fids = face_ids(len(x))
    write_faces(tmp_path, "2026-11-01", fids, x)
    path = next((tmp_path / "faces").rglob("*.parquet"))
    t = pq.read_table(path)
    x2 = t.column("x2").to_numpy().copy()
    x2[[3, 4]] = 20.0  # 20 px wide: too small at 40
    pq.write_table(t.set_column(t.schema.get_field_index("x2"), "x2", pa.array(x2, pa.float32())), path)
    why = {fids[4]: "outlier", fids[9]: "outlier", "zz-other": "outlier"}
    fs = load_faces(str(tmp_path), why, min_width=40)
    gone = {3, 4, 9}
    assert fs.left_out == {fids[3]: "too_small", fids[4]: "outlier", fids[9]: "outlier"}
    kept = [i for i in range(len(fids)) if i not in gone]
    assert fs.face_ids == [fids[i] for i in kept] and fs.id_array().to_pylist() == [fids[i] for i in kept]
    assert np.array_equal(fs.x, x[kept]) and (fs.width == 100).all() and len(fs.image_ids) == len(kept)
    everyone = load_faces(str(tmp_path), {}, min_width=0)
    assert everyone.left_out == {} and everyone.face_ids == fids and np.array_equal(everyone.x, x)
