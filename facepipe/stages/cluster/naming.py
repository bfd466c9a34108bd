"""Identity ids that stay put from night to night: a cluster takes the previous id it overlaps
most, a new one a hash of its smallest face id; merges and splits between two assignments are
recorded as ``identity_events`` (see the cluster stage's docstring). The last snapshot is read
back here (:func:`read_previous`) and coded per face (:func:`encode_table`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import schema
from facepipe.stages.cluster.arrays import take, unique
from facepipe.storage.output import Output, as_output

NEW, POOL = -2, -1  # previous codes of a face the snapshot has not seen / left unassigned


def new_identity_id(face_ids: list[str]) -> str:
    return "id-" + hashlib.blake2b(min(face_ids).encode(), digest_size=8).hexdigest()


def name_clusters(face_ids: list[str], labels: np.ndarray, prev_code: np.ndarray, old_ids: list[str]) -> dict[int, str]:
    """label -> identity id. (cluster, old id) pairs are taken by decreasing shared faces (ties:
    the cluster with the smaller first face, then the smaller id), each cluster and each old id
    once; a cluster left over gets a new deterministic id. ``face_ids`` and ``old_ids`` come
    sorted, so rows and codes order them as their strings do."""
    ok = labels >= 0
    ulab, first = np.unique(labels[ok], return_index=True)
    first_row = np.flatnonzero(ok)[first]  # each cluster's smallest face
    both = ok & (prev_code >= 0)
    n_old = max(len(old_ids), 1)
    key, count = np.unique(labels[both] * n_old + prev_code[both], return_counts=True)
    lab, old = key // n_old, key % n_old
    by = np.lexsort((old, first_row[np.searchsorted(ulab, lab)], -count))
    chosen = _greedy(lab, old, n_old, by)
    name = dict(zip(lab[by][chosen].tolist(), [old_ids[o] for o in old[by][chosen].tolist()]))
    # a new id must not be an old one: an old identity's id hashes its smallest face, which may
    # now sit in another cluster than the one that kept the id
    used = set(old_ids)
    left = np.flatnonzero(~np.isin(ulab, np.fromiter(name, np.int64, len(name))))
    left = left[np.argsort(first_row[left], kind="stable")]  # by first face
    for la, first in zip(ulab[left].tolist(), take(face_ids, first_row[left])):
        ident, salt = new_identity_id([first]), 0  # faces are sorted: the first is the smallest
        while ident in used:
            salt += 1
            ident = new_identity_id([f"{first}#{salt}"])
        name[la] = ident
        used.add(ident)
    return name


def _greedy(lab: np.ndarray, old: np.ndarray, n_old: int, by: np.ndarray) -> np.ndarray:
    """Whether the greedy over the (cluster ``lab``, old id ``old``) pairs (sorted by cluster) in
    the order ``by`` takes each of them (in that order): each cluster and each old id once. A pair
    alone with its cluster and its old id is taken whatever the order -- nearly every pair of a
    night --, so the loop walks only the others."""
    runs = np.diff(np.r_[np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]]), len(lab)]) if len(lab) else lab
    alone = (np.repeat(runs, runs) == 1) & (np.bincount(old, minlength=n_old)[old] == 1)
    chosen, lab, old = alone[by], lab[by], old[by]
    named, taken = set(), np.zeros(n_old, bool)
    for i in np.flatnonzero(~chosen).tolist():
        if int(lab[i]) not in named and not taken[old[i]]:
            chosen[i], taken[old[i]] = True, True
            named.add(int(lab[i]))
    return chosen


def encode_previous(face_ids: list[str], previous: dict[str, str | None]) -> tuple[np.ndarray, list[str]]:
    """Previous assignment as codes per face (NEW, POOL or an index into the sorted old ids)."""
    old_ids = sorted({i for i in previous.values() if i is not None})
    pos = {o: j for j, o in enumerate(old_ids)}
    code = np.array(
        [NEW if f not in previous else (POOL if previous[f] is None else pos[previous[f]]) for f in face_ids], np.int64
    )
    return code, old_ids


def encode_table(
    face_ids: list[str] | pa.Array, previous: pa.Table | None, rows: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """:func:`encode_previous` from the snapshot's (face_id, identity_id) table, which holds each
    face once: looked up in Arrow, no dict of every face (``rows``: :func:`previous_rows`)."""
    if previous is None or not previous.num_rows:
        return np.full(len(face_ids), NEW, np.int64), []
    coded = previous.column("identity_id").combine_chunks().dictionary_encode()  # one pass over the ids
    by_id = pc.sort_indices(coded.dictionary).to_numpy()
    old_ids = coded.dictionary.take(by_id).to_pylist()  # sorted (bytewise: as Python sorts them)
    rank = np.empty(len(by_id), np.int64)
    rank[by_id] = np.arange(len(by_id))
    idx = coded.indices.fill_null(-1).to_numpy()
    known = np.full(len(idx), POOL, np.int64)  # no identity: the pool
    known[idx >= 0] = rank[idx[idx >= 0]]
    rows = previous_rows(face_ids, previous) if rows is None else rows
    code = np.where(rows >= 0, known[np.maximum(rows, 0)], NEW)
    return code, old_ids


def previous_rows(face_ids: list[str] | pa.Array, previous: pa.Table) -> np.ndarray:
    """(N,) each face's row in the snapshot's table, -1 where it has none."""
    at = pc.index_in(schema.string_array(face_ids), value_set=previous.column("face_id").combine_chunks())
    return at.fill_null(-1).to_numpy().astype(np.int64)


@dataclass
class Snapshot:
    """The last snapshot as a night needs it: each face's ``code`` (NEW, POOL or an index into
    ``old_ids``) and recorded ``distance`` to its identity's centroid (NaN: none), the ``run``
    that wrote it, one file's ``schema`` (its metadata keeps the link threshold), whether it
    ``held`` any face."""

    code: np.ndarray
    old_ids: list[str]
    distance: np.ndarray
    run: str | None
    schema: pa.Schema | None
    held: bool


def read_snapshot(output: Output, face_ids: list[str] | pa.Array) -> Snapshot:
    """The last snapshot of ``output`` for tonight's ``face_ids`` (:class:`Snapshot`)."""
    previous, run, file_schema = read_previous(output)
    if previous is None or not previous.num_rows:
        code, old_ids = encode_table(face_ids, None)
        return Snapshot(code, old_ids, np.full(len(face_ids), np.nan, np.float32), run, file_schema, False)
    rows = previous_rows(face_ids, previous)
    code, old_ids = encode_table(face_ids, previous, rows)
    recorded = previous.column("distance").to_numpy().astype(np.float32)  # nulls: NaN
    distance = np.where(rows >= 0, recorded[np.maximum(rows, 0)], np.float32(np.nan)).astype(np.float32)
    return Snapshot(code, old_ids, distance, run, file_schema, True)


def read_previous(output: str | Output) -> tuple[pa.Table | None, str | None, pa.Schema | None]:
    """The published face_identity snapshot as a (face_id, identity_id, distance) table
    (identity_id null: unassigned; :func:`encode_table` codes it, no dict of every face:
    gigabytes at 10^7), the run id that wrote it, and the schema of one of its files (its
    metadata keeps the link threshold, ``facepipe.stages.cluster.threshold``)."""
    out = as_output(output)
    ds = out.dataset("face_identity")
    if ds is None:
        return None, None, None
    t = ds.to_table(columns=["face_id", "identity_id", "run_id", "distance"])
    runs = set(t.column("run_id").unique().to_pylist())
    files = out.part_files("face_identity")
    schema = out.read_table(files[0], columns=["run_id"]).schema if files else None  # one small column: the metadata
    return t.drop_columns(["run_id"]), runs.pop() if len(runs) == 1 else None, schema


def assign_ids(face_ids: list[str], labels: np.ndarray, previous: dict[str, str | None]) -> list[str | None]:
    """Identity id per face (``face_ids`` sorted) for cluster ``labels``, reusing ``previous``
    ids by overlap (:func:`name_clusters`)."""
    code, old_ids = encode_previous(face_ids, previous)
    name = name_clusters(face_ids, np.asarray(labels), code, old_ids)
    return [name[int(lab)] if lab >= 0 else None for lab in labels]


def _parts(prev_code: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(old code, label, faces) of each pair the faces in both assignments form, by code then label."""
    moved = (prev_code >= 0) & (labels >= 0)
    n_lab = int(labels.max()) + 1 if len(labels) else 1
    key, count = np.unique(prev_code[moved] * n_lab + labels[moved], return_counts=True)
    return key // n_lab, key % n_lab, count


def _kept(name: dict[int, str], old_ids: list[str]) -> tuple[dict[str, int], dict[int, int], np.ndarray]:
    """(old id -> its code; label -> the code of the old id it kept; (codes + 1,) whether kept)."""
    at = {oid: j for j, oid in enumerate(old_ids)}
    kept = {la: at[i] for la, i in name.items() if i in at}
    alive = np.zeros(len(old_ids) + 1, bool)
    alive[np.fromiter(kept.values(), np.int64, len(kept))] = True
    return at, kept, alive


def _event(kind: str, old_ids: list[str], new_ids: list[str], n_faces: int, face_ids: list[str]) -> dict:
    return {"event": kind, "old_ids": old_ids, "new_ids": new_ids, "n_faces": n_faces, "face_ids": face_ids}


def identity_events(
    prev_code: np.ndarray,
    old_ids: list[str],
    labels: np.ndarray,
    name: dict[int, str],
    split_share: float = 0.25,
    face_ids: list[str] | None = None,
) -> list[dict]:
    """Merges and splits between the previous assignment and this one (faces present in both).

    merge: an old id no cluster kept, whose faces went mostly (> half) into one identity ->
    ``old_ids`` [that identity if it is old, and every id merged into it], ``new_ids`` [it];
    ``face_ids``: the faces placed this time (not in the previous assignment) that are now in it --
    the ones that brought the identities together.
    split: an old id that was kept, of which a *new* identity took at least ``split_share`` of
    the faces and at least 2 -> ``old_ids`` [it], ``new_ids`` [it, the new ones]; ``face_ids``:
    the faces placed this time in the new ones. (``face_ids`` is empty without ``face_ids`` given.)"""
    label_of = {v: k for k, v in name.items()}
    placed = np.flatnonzero(prev_code < 0)

    def placed_in(ids: list[str]) -> list[str]:
        if face_ids is None:
            return []
        rows = placed[np.isin(labels[placed], [label_of[i] for i in ids])]
        return sorted(take(face_ids, rows))

    old, lab, count = _parts(prev_code, labels)
    at, kept, alive = _kept(name, old_ids)
    total = np.bincount(prev_code[prev_code >= 0], minlength=len(old_ids))
    into_new = np.array([la not in kept for la in lab.tolist()], bool)  # the pair's identity is a new one
    splits = alive[old] & into_new & (count >= np.maximum(2, np.ceil(split_share * total[old])))
    merged_into: dict[str, list[tuple[str, int]]] = {}
    events = []
    for o in unique(old[~alive[old] | splits]).tolist():  # an old id with an event: few
        oid, at_o = old_ids[o], slice(*np.searchsorted(old, [o, o + 1]))
        ps = [(c, name[la]) for c, la in zip(count[at_o].tolist(), lab[at_o].tolist())]
        if not alive[o]:
            c, dest = max(ps, key=lambda p: (p[0], p[1]))
            if 2 * c > total[o]:
                merged_into.setdefault(dest, []).append((oid, c))
            continue
        new = sorted((name[la], c) for c, la, s in zip(count[at_o], lab[at_o].tolist(), splits[at_o]) if s)
        new_ids = [d for d, _ in new]
        events.append(_event("split", [oid], [oid, *new_ids], int(sum(c for _, c in new)), placed_in(new_ids)))
    for dest, olds in merged_into.items():
        old_merged = sorted([o for o, _ in olds] + ([dest] if dest in at else []))
        events.append(_event("merge", old_merged, [dest], sum(c for _, c in olds), placed_in([dest])))
    return sorted(events, key=lambda e: (e["event"], e["old_ids"], e["new_ids"]))


def events_table(events: list[dict], run_id: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"correction_ids": [], **e, "run_id": run_id} for e in events], schema=schema.IDENTITY_EVENTS
    )
