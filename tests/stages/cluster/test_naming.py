"""The last snapshot coded for the night (facepipe.stages.cluster.naming): read as a table and
coded in Arrow (no dict of every face: gigabytes at 10^7), the same codes as from the dict."""

import numpy as np
import pyarrow as pa

from facepipe.stages.cluster.naming import NEW, POOL, encode_previous, encode_table


def test_the_snapshot_table_codes_as_its_dict_does():
    """Faces of the snapshot with an identity get its index among the sorted old ids, those it
    left unassigned POOL, faces it has not seen NEW; faces of the snapshot gone from the archive
    change nothing."""
    rng = np.random.default_rng(0)
    faces = [f"f{i:05d}" for i in range(3000)]
    idents = [f"id-{i:03d}" for i in range(300)]
    snap = rng.permutation(faces + [f"gone{i}" for i in range(50)])[:2500]  # some of tonight's are new
    ids = [None if rng.random() < 0.1 else idents[rng.integers(len(idents))] for _ in snap]
    table = pa.table({"face_id": pa.array(snap.tolist(), pa.string()), "identity_id": pa.array(ids, pa.string())})
    previous = dict(zip(snap.tolist(), ids))
    want_code, want_old = encode_previous(faces, previous)
    code, old = encode_table(faces, table)
    assert old == want_old and np.array_equal(code, want_code)
    assert {NEW, POOL} <= set(code.tolist()) and code.max() == len(old) - 1
    chunked = pa.concat_tables([table.slice(0, 1000), table.slice(1000)])  # files read as chunks
    assert np.array_equal(encode_table(faces, chunked)[0], want_code)
    none, no_old = encode_table(faces, None)
    assert no_old == [] and (none == NEW).all()
