"""Identity ids that stay put from night to night: a cluster takes the previous id it overlaps
most, a new one a hash of its smallest face id; merges and splits between two assignments are
recorded as ``identity_events`` (see the cluster stage's docstring)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NEW, POOL = -2, -1  # previous codes of a face the snapshot has not seen / left unassigned


def new_identity_id(face_ids: list[str]) -> str:
    return "id-" + hashlib.blake2b(min(face_ids).encode(), digest_size=8).hexdigest()


def name_clusters(face_ids: list[str], labels: np.ndarray, prev_code: np.ndarray, old_ids: list[str]) -> dict[int, str]:
    """label -> identity id. (cluster, old id) pairs are taken by decreasing shared faces (ties:
    the cluster with the smaller first face, then the smaller id), each cluster and each old id
    once; a cluster left over gets a new deterministic id."""
    ok = labels >= 0
    ulab, first = np.unique(labels[ok], return_index=True)
    first_face = {int(lab): face_ids[i] for lab, i in zip(ulab, np.flatnonzero(ok)[first])} if len(ulab) else {}
    both = ok & (prev_code >= 0)
    n_old = max(len(old_ids), 1)
    key, count = np.unique(labels[both] * n_old + prev_code[both], return_counts=True)
    pairs = sorted(
        zip((-count).tolist(), (key // n_old).tolist(), (key % n_old).tolist()),
        key=lambda p: (p[0], first_face[p[1]], old_ids[p[2]]),
    )
    name: dict[int, str] = {}
    taken: set[int] = set()
    for _, lab, old in pairs:
        if lab not in name and old not in taken:
            name[lab] = old_ids[old]
            taken.add(old)
    # a new id must not be an old one: an old identity's id hashes its smallest face, which may
    # now sit in another cluster than the one that kept the id
    used = set(old_ids) | set(name.values())
    for lab in sorted(set(first_face) - set(name), key=first_face.__getitem__):
        ident, salt = new_identity_id([first_face[lab]]), 0  # faces are sorted: the first is the smallest
        while ident in used:
            salt += 1
            ident = new_identity_id([f"{first_face[lab]}#{salt}"])
        name[lab] = ident
        used.add(ident)
    return name


def encode_previous(face_ids: list[str], previous: dict[str, str | None]) -> tuple[np.ndarray, list[str]]:
    """Previous assignment as codes per face (NEW, POOL or an index into the sorted old ids)."""
    old_ids = sorted({i for i in previous.values() if i is not None})
    pos = {o: j for j, o in enumerate(old_ids)}
    code = np.array(
        [NEW if f not in previous else (POOL if previous[f] is None else pos[previous[f]]) for f in face_ids], np.int64
    )
    return code, old_ids


def encode_table(face_ids: list[str], previous: pa.Table | None) -> tuple[np.ndarray, list[str]]:
    """:func:`encode_previous` from the snapshot's (face_id, identity_id) table, which holds each
    face once: looked up in Arrow, no dict of every face."""
    if previous is None or not previous.num_rows:
        return np.full(len(face_ids), NEW, np.int64), []
    ident = previous.column("identity_id").combine_chunks()
    old_ids = sorted(pc.unique(ident).drop_null().to_pylist())
    known = pc.index_in(ident, value_set=pa.array(old_ids, pa.string())).fill_null(POOL).to_numpy()
    at = pc.index_in(pa.array(face_ids, pa.string()), value_set=previous.column("face_id").combine_chunks())
    rows = at.fill_null(-1).to_numpy().astype(np.int64)
    code = np.where(rows >= 0, known.astype(np.int64)[np.maximum(rows, 0)], NEW)
    return code, old_ids


def assign_ids(face_ids: list[str], labels: np.ndarray, previous: dict[str, str | None]) -> list[str | None]:
    """Identity id per face (``face_ids`` sorted) for cluster ``labels``, reusing ``previous``
    ids by overlap (:func:`name_clusters`)."""
    code, old_ids = encode_previous(face_ids, previous)
    name = name_clusters(face_ids, np.asarray(labels), code, old_ids)
    return [name[int(lab)] if lab >= 0 else None for lab in labels]


def _where_old_faces_went(prev_code: np.ndarray, labels: np.ndarray, name: dict[int, str]) -> dict[int, list]:
    """Old identity code -> [(faces, identity id now)] for the faces in both assignments."""
    moved = (prev_code >= 0) & (labels >= 0)
    n_lab = int(labels.max()) + 1 if len(labels) else 1
    key, count = np.unique(prev_code[moved] * n_lab + labels[moved], return_counts=True)
    parts: dict[int, list[tuple[int, str]]] = {}
    for kk, c in zip(key.tolist(), count.tolist()):
        parts.setdefault(kk // n_lab, []).append((c, name[kk % n_lab]))
    return parts


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

    def placed_in(ids: list[str]) -> list[str]:
        if face_ids is None:
            return []
        rows = np.flatnonzero((prev_code < 0) & np.isin(labels, [label_of[i] for i in ids]))
        return sorted(face_ids[i] for i in rows)

    alive, old_set = set(name.values()), set(old_ids)
    total = np.bincount(prev_code[prev_code >= 0], minlength=len(old_ids))
    merged_into: dict[str, list[tuple[str, int]]] = {}
    events = []
    for o, ps in sorted(_where_old_faces_went(prev_code, labels, name).items()):
        oid = old_ids[o]
        if oid not in alive:
            c, dest = max(ps, key=lambda p: (p[0], p[1]))
            if 2 * c > total[o]:
                merged_into.setdefault(dest, []).append((oid, c))
            continue
        need = max(2, math.ceil(split_share * total[o]))
        new = sorted((d, c) for c, d in ps if d != oid and d not in old_set and c >= need)
        if new:
            new_ids = [d for d, _ in new]
            events.append(_event("split", [oid], [oid, *new_ids], sum(c for _, c in new), placed_in(new_ids)))
    for dest, olds in merged_into.items():
        old_merged = sorted([o for o, _ in olds] + ([dest] if dest in old_set else []))
        events.append(_event("merge", old_merged, [dest], sum(c for _, c in olds), placed_in([dest])))
    return sorted(events, key=lambda e: (e["event"], e["old_ids"], e["new_ids"]))
