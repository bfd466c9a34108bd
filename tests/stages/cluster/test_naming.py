"""The last snapshot coded for the night (facepipe.stages.cluster.naming): read as a table and
coded in Arrow (no dict of every face: gigabytes at 10^7), the same codes as from the dict; the
night's ids and events from arrays, the same as from loops over every face."""

import math

import numpy as np
import pyarrow as pa

from facepipe.stages.cluster.naming import (
    NEW,
    POOL,
    encode_previous,
    encode_table,
    identity_events,
    name_clusters,
    new_identity_id,
)


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


def _name_by_loop(face_ids, labels, prev_code, old_ids):
    """name_clusters as a loop over (cluster, old id) pairs, sorted by their strings."""
    ok = labels >= 0
    first_face = {}
    for i in np.flatnonzero(ok):
        first_face.setdefault(int(labels[i]), face_ids[i])
    both = ok & (prev_code >= 0)
    shared = {}
    for lab, old in zip(labels[both].tolist(), prev_code[both].tolist()):
        shared[lab, old] = shared.get((lab, old), 0) + 1
    name, taken = {}, set()
    for (lab, old), _ in sorted(shared.items(), key=lambda kv: (-kv[1], first_face[kv[0][0]], old_ids[kv[0][1]])):
        if lab not in name and old not in taken:
            name[lab], _ = old_ids[old], taken.add(old)
    for lab in sorted(set(first_face) - set(name), key=first_face.__getitem__):
        name[lab] = new_identity_id([first_face[lab]])
    return name


def _events_by_loop(prev_code, old_ids, labels, name, split_share, face_ids):
    """identity_events as a loop over every old identity."""
    alive, old_set = set(name.values()), set(old_ids)
    parts = {}
    for o, lab in zip(prev_code.tolist(), labels.tolist()):
        if o >= 0 and lab >= 0:
            parts.setdefault(o, {}).setdefault(name[lab], 0)
            parts[o][name[lab]] += 1
    total = np.bincount(prev_code[prev_code >= 0], minlength=len(old_ids))
    placed = lambda ids: sorted(
        f for f, o, lab in zip(face_ids, prev_code, labels) if o < 0 and lab >= 0 and name[lab] in ids
    )  # noqa: E731
    events, merged_into = [], {}
    for o, ps in sorted(parts.items()):
        if old_ids[o] not in alive:
            dest, c = max(ps.items(), key=lambda p: (p[1], p[0]))
            if 2 * c > total[o]:
                merged_into.setdefault(dest, []).append((old_ids[o], c))
            continue
        need = max(2, math.ceil(split_share * total[o]))
        new = sorted((d, c) for d, c in ps.items() if d != old_ids[o] and d not in old_set and c >= need)
        if new:
            ids = [d for d, _ in new]
            events.append({"event": "split", "old_ids": [old_ids[o]], "new_ids": [old_ids[o], *ids],
                           "n_faces": sum(c for _, c in new), "face_ids": placed(ids)})  # fmt: skip
    for dest, olds in merged_into.items():
        old_merged = sorted([o for o, _ in olds] + ([dest] if dest in old_set else []))
        events.append({"event": "merge", "old_ids": old_merged, "new_ids": [dest],
                       "n_faces": sum(c for _, c in olds), "face_ids": placed([dest])})  # fmt: skip
    return sorted(events, key=lambda e: (e["event"], e["old_ids"], e["new_ids"]))


def test_names_and_events_are_those_of_the_loop_over_every_pair():
    """Ids and events come from arrays (a Python loop over every face's pair took 10 s of a night
    at 3x10^6 faces): the ids, merges and splits of the loop over every (cluster, old id) pair --
    over nights of merges, splits, faces moved, new faces and unassigned ones."""
    kinds = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        n, n_old = 3000, 300
        face_ids = sorted(f"{rng.integers(1 << 60):016x}" for _ in range(n))
        old_ids = sorted({f"id-{rng.integers(1 << 40):010x}" for _ in range(n_old)})
        prev = rng.permutation(np.resize(np.arange(len(old_ids)), n))  # as many faces each: ties
        prev[rng.random(n) < 0.1] = NEW
        prev[rng.random(n) < 0.03] = POOL
        labels = rng.permutation(len(old_ids))[np.maximum(prev, 0)] * 3  # clusters numbered anyhow
        for a, b in rng.integers(0, len(old_ids), (40, 2)):  # merges
            labels[labels == 3 * b] = 3 * a
        split = np.isin(labels, 3 * rng.integers(0, len(old_ids), 30)) & (rng.random(n) < 0.5)  # parts of
        labels[split] = labels[split] + 1 + (rng.random(split.sum()) < 0.3)  # identities become new ones
        fresh = prev == NEW
        labels[fresh] = np.where(
            rng.random(fresh.sum()) < 0.5, labels[fresh], 3 * n_old + rng.integers(0, 50, fresh.sum())
        )
        labels[rng.random(n) < 0.02] = -1
        name = name_clusters(face_ids, labels, prev, old_ids)
        assert name == _name_by_loop(face_ids, labels, prev, old_ids)
        share = float(rng.choice([0.1, 0.25, 0.5]))
        events = identity_events(prev, old_ids, labels, name, share, face_ids)
        assert events == _events_by_loop(prev, old_ids, labels, name, share, face_ids)
        kinds |= {e["event"] for e in events}
    assert kinds == {"merge", "split"}
