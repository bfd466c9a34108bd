"""Erasure of a person or of images from a published output, and the tombstones that keep them out.

``facepipe forget --output OUT (--identity-id ID | --image-id ID | --source-prefix URI)``:

1. **Select.** An identity id selects its faces (``face_identity``); image ids and source
   prefixes select images (``images``) and every face in them.
2. **Stage.** Every table file holding a selected row is rewritten without it into
   ``OUT/_staging/forget-REQUEST/`` (the job's staging area); identities that lose some faces but
   not all get their ``n_faces``, ``centroid``, ``representative_face_id`` and first/last seen
   recomputed from the faces left, so no erased embedding survives inside a centroid; the kept
   neighbour index likewise (:mod:`facepipe.storage.index_erase`). Nothing is visible yet,
   and a failure here changes nothing.
3. **Tombstone.** ``OUT/_tombstones/part-forget-REQUEST.parquet`` lists the erased image ids,
   source prefixes and face ids. The job's reader honours it (:class:`Tombstones`): units and
   images under an erased prefix or id are never decoded again, and erased face ids are dropped
   before anything is written -- so tomorrow's run, ``--full`` included, does not bring them back.
   The tombstone is written before the tables change, so a crash between the two never leaves
   erased rows that a rerun could resurrect.
4. **Publish.** The rewritten files replace the originals (a file left empty is deleted), as the
   job publishes: one move per file, so a reader sees each file whole, old or new.
5. **Audit.** ``OUT/_audit/forget-REQUEST.json`` is written last: the request (selector, who,
   why), when, rows removed per table and files rewritten -- ids only, never an embedding,
   a pixel or a credential.

What is not erased here: the source images themselves (the archive is the user's), and DROCC
models already trained on the faces (``_models/drocc/``): retrain (the nightly run does, unless
``--drocc-model`` pins one) and delete the old artifacts when the model itself must forget.
``images`` rows of an identity erasure stay (the photo is still in the archive); their
``n_faces`` counts the faces detected, erased ones included.
"""

from __future__ import annotations

import getpass
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facepipe.stages.cluster.identities import identity_rows
from facepipe.storage.index_erase import index_rewrites
from facepipe.storage.output import AUDIT, Output, as_output, without_rows
from facepipe.storage.tombstones import Tombstones, load_tombstones, write_tombstones  # noqa: F401 -- re-exported

#: Tables whose rows name faces (``face_id``), and the identity tables.
FACE_TABLES = ("faces", "face_outliers", "face_identity")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ForgetRequest:
    """What to erase, and the request's bookkeeping (kept in the audit record).

    identity_ids / image_ids / source_prefixes: the selectors (any mix). request_id: names the
    staging prefix, tombstone file and audit record (default: ``forget-`` + a timestamp and a
    random suffix). requested_by / reason: free text for the audit record (no biometric data).
    """

    identity_ids: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()
    source_prefixes: tuple[str, ...] = ()
    request_id: str = ""
    requested_by: str = ""
    reason: str = ""

    def resolved(self) -> "ForgetRequest":
        rid = self.request_id or f"forget-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        if not _REQUEST_ID.match(rid):
            raise ValueError(f"request id {rid!r}: use letters, digits, '.', '_' and '-' (at most 128)")
        if not (self.identity_ids or self.image_ids or self.source_prefixes):
            raise ValueError("nothing to forget: give --identity-id, --image-id or --source-prefix")
        if any(not p.strip() for p in self.source_prefixes):
            raise ValueError("an empty --source-prefix would erase everything; name the prefix")
        by = self.requested_by or getpass.getuser()
        return ForgetRequest(
            tuple(self.identity_ids), tuple(self.image_ids), tuple(self.source_prefixes), rid, by, self.reason
        )


@dataclass
class _Rewrite:
    path: str  # the published file
    rel: str  # its path relative to OUT
    kept: pa.Table | None  # None: delete the file
    removed: int


@dataclass
class Erasure:
    """The plan of one request: the selected ids and every file rewrite, before anything moves."""

    request: ForgetRequest
    image_ids: set[str] = field(default_factory=set)
    face_ids: set[str] = field(default_factory=set)
    identity_ids: set[str] = field(default_factory=set)  # removed whole
    refreshed: set[str] = field(default_factory=set)  # lost some faces; stats recomputed
    rewrites: list[_Rewrite] = field(default_factory=list)

    def removed(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rewrites:
            t = r.rel.split("/", 1)[0]
            out[t] = out.get(t, 0) + r.removed
        return out


def _scan(
    out: Output, table: str, column: str, values: set[str], columns: tuple[str, ...] | None = None
) -> list[tuple[str, pa.Table, pa.Array]]:
    """(file, table, hit mask) for the table's files holding a row whose ``column`` is in values.
    Each file's key column is read first (plain, even in an encrypted output); only files with a
    hit are read whole (decrypted) -- or as ``columns`` when the caller only collects ids."""
    if not values:
        return []
    wanted = pa.array(sorted(values), pa.string())
    hits = []
    for path in out.part_files(table):
        keys = pq.read_table(path, filesystem=out.fs, columns=[column])
        hit = pc.fill_null(pc.is_in(keys.column(column), value_set=wanted), False)
        if pc.any(hit).as_py():
            t = pq.read_table(path, filesystem=out.fs, columns=list(columns)) if columns else out.read_table(path)
            hits.append((path, t, hit))
    return hits


def _drop(out: Output, path: str, t: pa.Table, hit: pa.Array) -> _Rewrite:
    kept, removed = without_rows(t, pc.invert(hit))
    return _Rewrite(path, out.relative(path), kept, removed)


def plan(output: str | Output, request: ForgetRequest) -> Erasure:
    """Find every row the request erases and compute the rewritten files (nothing is written)."""
    out = as_output(output)
    e = Erasure(request)
    prefixes = request.source_prefixes
    # images selected by id or source prefix
    for path in out.part_files("images"):
        t = pq.read_table(path, filesystem=out.fs)
        ids, uris = t.column("image_id").to_pylist(), t.column("source_uri").to_pylist()
        hit = np.array(
            [i in request.image_ids or any(u.startswith(p) for p in prefixes) for i, u in zip(ids, uris)], bool
        )
        if hit.any():
            e.image_ids.update(i for i, h in zip(ids, hit) if h)
            e.rewrites.append(_drop(out, path, t, pa.array(hit)))
    # faces of those images, and faces of the identities named
    for _info, t, hit in _scan(out, "faces", "image_id", e.image_ids, columns=("face_id",)):
        e.face_ids.update(t.column("face_id").filter(hit).to_pylist())
    for _info, t, hit in _scan(out, "face_identity", "identity_id", set(request.identity_ids), columns=("face_id",)):
        e.face_ids.update(t.column("face_id").filter(hit).to_pylist())
    for table in FACE_TABLES:
        e.rewrites += [_drop(out, path, t, hit) for path, t, hit in _scan(out, table, "face_id", e.face_ids)]
    # human corrections naming an erased face (either end; a name is personal data too)
    wanted = pa.array(sorted(e.face_ids), pa.string())
    for path in out.part_files("corrections") if e.face_ids else ():
        t = pq.read_table(path, filesystem=out.fs)
        hit = pc.or_(
            *(pc.fill_null(pc.is_in(t.column(c), value_set=wanted), False) for c in ("face_id", "other_face_id"))
        )
        if pc.any(hit).as_py():
            e.rewrites.append(_drop(out, path, t, hit))
    _plan_identities(out, e)
    e.rewrites += [_Rewrite(path, out.relative(path), kept, n) for path, kept, n in index_rewrites(out, e.face_ids)]
    return e


def _plan_identities(out: Output, e: Erasure) -> None:
    """Identities that lost every face are removed; those that lost some are recomputed from the
    faces they keep (the cluster stage's formulas: mean embedding, best-scoring representative)."""
    ident_files = out.part_files("identities")
    if not ident_files or not e.face_ids:
        e.identity_ids |= set(e.request.identity_ids)
        return
    # identity of every face (the snapshot), before and after the erasure
    fi = [
        pq.read_table(path, filesystem=out.fs, columns=["face_id", "identity_id"])
        for path in out.part_files("face_identity")
    ]
    fi_t = (
        pa.concat_tables(fi)
        if fi
        else pa.table({"face_id": pa.array([], pa.string()), "identity_id": pa.array([], pa.string())})
    )
    erased = pc.is_in(fi_t.column("face_id"), value_set=pa.array(sorted(e.face_ids), pa.string()))
    touched = set(pc.unique(fi_t.column("identity_id").filter(erased)).drop_null().to_pylist()) | set(
        e.request.identity_ids
    )
    touched_arr = pa.array(sorted(touched), pa.string())
    kept = fi_t.filter(
        pc.and_(pc.invert(erased), pc.fill_null(pc.is_in(fi_t.column("identity_id"), value_set=touched_arr), False))
    )
    left: dict[str, list[str]] = {}
    for f, ident in zip(kept.column("face_id").to_pylist(), kept.column("identity_id").to_pylist()):
        left.setdefault(ident, []).append(f)
    e.identity_ids |= touched - set(left)
    e.refreshed = touched & set(left)
    fresh = identity_rows(out, left) if e.refreshed else {}
    for path in ident_files:
        ids = pq.read_table(path, filesystem=out.fs, columns=["identity_id"]).column("identity_id")
        hit = pc.fill_null(pc.is_in(ids, value_set=touched_arr), False)
        if not pc.any(hit).as_py():
            continue
        t = out.read_table(path)
        rows = [{**r, **fresh[r["identity_id"]]} for r in t.filter(hit).to_pylist() if r["identity_id"] in fresh]
        new = pa.concat_tables([t.filter(pc.invert(hit)), pa.Table.from_pylist(rows, schema=t.schema)]).sort_by(
            "identity_id"
        )
        e.rewrites.append(_Rewrite(path, out.relative(path), new if new.num_rows else None, t.num_rows - new.num_rows))
    # events that name a removed identity
    gone = pa.array(sorted(e.identity_ids), pa.string())
    for path in out.part_files("identity_events") if e.identity_ids else []:
        t = pq.read_table(path, filesystem=out.fs)
        hit = pc.or_(_any_in(t.column("old_ids"), gone), _any_in(t.column("new_ids"), gone))
        if pc.any(hit).as_py():
            e.rewrites.append(_drop(out, path, t, hit))


def _any_in(lists: pa.ChunkedArray, values: pa.Array) -> pa.Array:
    lists = lists.combine_chunks()
    flat = pc.is_in(pc.list_flatten(lists), value_set=values).to_numpy(zero_copy_only=False)
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    out = np.zeros(len(lists), bool)
    np.logical_or.at(out, parent, flat)
    return pa.array(out)


def apply(output: str | Output, e: Erasure) -> dict:
    """Stage the rewrites, write the tombstone, publish, write the audit record; returns it."""
    out = as_output(output)
    rid = e.request.request_id
    t0 = time.perf_counter()
    out.clear_staging(rid)
    for r in e.rewrites:
        if r.kept is not None:
            out.write_table(r.kept, out.staging_path(rid, r.rel))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    marks = [("image_id", v) for v in sorted(e.image_ids)] + [
        ("source_prefix", v) for v in sorted(set(e.request.source_prefixes))
    ]
    marks += [("face_id", v) for v in sorted(e.face_ids)]
    if marks:
        write_tombstones(out, rid, marks, now)
    for r in e.rewrites:  # publish: one move (or delete) per file
        if r.kept is None:
            out.fs.delete_file(r.path)
        else:
            out.fs.move(out.staging_path(rid, r.rel), r.path)
    out.clear_staging(rid)
    req = e.request
    audit = {
        "request_id": rid,
        "erased_at": now.isoformat(),
        "requested_by": req.requested_by,
        "reason": req.reason,
        "selector": {
            "identity_ids": list(req.identity_ids),
            "image_ids": list(req.image_ids),
            "source_prefixes": list(req.source_prefixes),
        },
        "erased": {
            "images": len(e.image_ids),
            "faces": len(e.face_ids),
            "identities_removed": sorted(e.identity_ids),
            "identities_recomputed": sorted(e.refreshed),
        },
        "rows_removed": e.removed(),
        "files_rewritten": sorted(r.rel for r in e.rewrites if r.kept is not None),
        "files_deleted": sorted(r.rel for r in e.rewrites if r.kept is None),
        "tombstones": len(marks),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    out.atomic_write(out.path(AUDIT, f"{rid}.json"), json.dumps(audit, indent=2, sort_keys=True).encode())
    audit["audit_uri"] = out.uri_of(AUDIT, f"{rid}.json")
    return audit


def forget(output: str | Output, request: ForgetRequest) -> dict:
    """Erase what ``request`` selects from ``output`` (see the module docstring); returns the
    audit record. Raises ValueError for a request that selects nothing."""
    req = request.resolved()
    out = as_output(output)
    out.recover()
    e = plan(out, req)
    if not any(r.removed for r in e.rewrites):
        raise ValueError(f"nothing in {out.uri} matches {_describe(req)}")
    return apply(out, e)


def _describe(r: ForgetRequest) -> str:
    parts = [f"identity {i}" for i in r.identity_ids] + [f"image {i}" for i in r.image_ids]
    return ", ".join(parts + [f"source prefix {p}" for p in r.source_prefixes])
