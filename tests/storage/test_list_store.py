"""The faces' neighbour lists kept in the output (facepipe.storage.list_store): read back as
written, the latest night's list of a face wins, a list naming a face no longer clustered is not
used, and lists kept for other settings or damaged are not used either (never a failed night)."""

import numpy as np

from facepipe.storage import list_store
from facepipe.storage.output import Output

K, RADIUS = 3, 0.55


def _write(out, run_id, rows, nbr, dist, slots, generation):
    staged = list_store.stage(
        out, run_id, np.asarray(rows), np.asarray(nbr), np.asarray(dist, np.float32), slots, RADIUS, generation
    )
    out.publish(run_id, staged, tables=("_index",), replace=False)


def test_lists_read_back_by_slot_and_the_latest_generation_wins(tmp_path):
    out = Output.open(str(tmp_path))
    slots = np.array([10, 11, 12, 13])  # rows 0..3 are slots 10..13
    nbr = [[1, 2, -1], [0, -1, -1], [3, 0, 1], [2, -1, -1]]
    dist = [[0.1, 0.2, np.inf], [0.1, np.inf, np.inf], [0.3, 0.4, 0.5], [0.3, np.inf, np.inf]]
    _write(out, "n1", [0, 1, 2, 3], nbr, dist, slots, 1)
    _write(out, "n2", [1], [[0, 3, -1]], [[0.1, 0.15, np.inf]], slots, 2)
    # the stage's faces tonight, in another order: rows 0..3 are slots 13, 12, 11, 10
    kept = list_store.load(out, slots[::-1].copy(), K, RADIUS)
    assert kept.generation == 2 and kept.valid.all()
    row = {s: i for i, s in enumerate(slots[::-1])}
    assert kept.nbr[row[11]].tolist() == [row[10], row[13], -1], "night 2's list of slot 11"
    assert kept.nbr[row[12]].tolist() == [row[13], row[10], row[11]]
    assert np.allclose(kept.dist[row[12]], [0.3, 0.4, 0.5])


def test_lists_of_many_batches_read_back_whole_and_in_place(tmp_path):
    """The files are read a batch at a time (2^16 rows): every face of a file of several batches,
    each batch's rows in their own place, and a later night's lists over them."""
    out, n = Output.open(str(tmp_path)), 150_000
    rng = np.random.default_rng(0)
    slots = rng.permutation(n)  # row i is slot slots[i]
    nbr = np.stack([(np.arange(n) + j) % n for j in (1, 2, 3)], 1)
    dist = rng.random((n, K)).astype(np.float32)
    _write(out, "n1", np.arange(n), nbr, dist, slots, 1)
    later = np.arange(0, n, 7)
    _write(out, "n2", later, nbr[later][:, ::-1], dist[later], slots, 2)
    order = rng.permutation(n)  # the faces tonight in another order
    kept = list_store.load(out, slots[order].copy(), K, RADIUS)
    want = nbr.copy()
    want[later] = nbr[later][:, ::-1]
    tonight = np.argsort(order)  # a row of night 1 -> its row tonight
    assert kept.valid.all()
    assert np.array_equal(kept.nbr[tonight], tonight[want])
    assert np.array_equal(kept.dist[tonight], dist)


def test_a_list_naming_a_face_no_longer_clustered_is_not_used(tmp_path):
    out = Output.open(str(tmp_path))
    slots = np.array([0, 1, 2])
    _write(out, "n1", [0, 1, 2], [[1, -1, -1], [0, 2, -1], [1, -1, -1]], np.full((3, K), 0.2), slots, 1)
    kept = list_store.load(out, np.array([0, 1, -1]), K, RADIUS)  # slot 2 is an outlier now: not clustered
    assert kept.valid.tolist() == [True, False, False]


def test_lists_of_other_settings_or_damaged_are_not_used(tmp_path, caplog):
    out = Output.open(str(tmp_path))
    slots = np.array([0, 1])
    _write(out, "n1", [0, 1], [[1, -1, -1], [0, -1, -1]], np.full((2, K), 0.2), slots, 1)
    assert list_store.load(out, slots, K, RADIUS) is not None
    assert list_store.load(out, slots, K, 0.6) is None and list_store.load(out, slots, 2, RADIUS) is None
    (path,) = out.part_files(list_store.LISTS)
    with open(path, "r+b") as f:
        f.truncate(64)
    assert list_store.load(out, slots, K, RADIUS) is None
    assert "cannot be read" in caplog.text
