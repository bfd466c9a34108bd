"""Human corrections of the identities, kept: every later night and every ``--full`` honours them.

No clustering is perfect at thousands of people; the fixes a person makes must last. They are
rows of the ``corrections`` table (``OUT/corrections/part-*.parquet``, schema
:data:`facepipe.schema.CORRECTIONS`), anchored on faces, whose ids never change (identity ids
can: a merge retires one):

- ``same`` (``face_id``, ``other_face_id``): the two faces are one person -- a must-link. "Merge
  these identities" is a ``same`` row between their representative faces.
- ``different`` (``face_id``, ``other_face_id``): ``face_id`` is not the person of
  ``other_face_id`` -- a cannot-link; ``face_id`` is the one moved out.
- ``name`` (``face_id``, ``name``): the identity holding the face is called ``name``.

``facepipe correct merge|split|name`` writes them (:func:`record`); anyone may add a file of
the same schema (a UI, a SQL ``COPY``). :func:`load` reads them in their own order (``created_at``, then
``correction_id``), never the files', and every clustering, full or incremental, applies them
to its labels (``facepipe.stages.cluster.constraints.apply_corrections``: a cannot-link always
wins); :func:`annotate_events` records what they did in ``identity_events``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging

import numpy as np
import pyarrow as pa

from facepipe import schema
from facepipe.stages.cluster.constraints import Applied
from facepipe.storage.output import Output, as_output

log = logging.getLogger(__name__)

TABLE = "corrections"
KINDS = schema.CORRECTION_KINDS


def correction_rows(
    kind: str,
    pairs: list[tuple[str, str | None]],
    name: str | None = None,
    author: str = "",
    note: str = "",
    now: _dt.datetime | None = None,
) -> pa.Table:
    """Rows of one correction command: ``pairs`` of (face_id, other_face_id or None)."""
    if kind not in KINDS:
        raise ValueError(f"correction kind {kind!r} is not one of {KINDS}")
    now = now or _dt.datetime.now(_dt.timezone.utc)
    rows = []
    for face, other in pairs:
        body = json.dumps([kind, face, other, name, now.isoformat()])
        rows.append(
            {
                "correction_id": "c-" + hashlib.blake2b(body.encode(), digest_size=8).hexdigest(),
                "kind": kind,
                "face_id": face,
                "other_face_id": other,
                "name": name,
                "created_at": now,
                "author": author,
                "note": note,
            }
        )
    return pa.Table.from_pylist(rows, schema=schema.CORRECTIONS)


class CorrectionError(ValueError):
    """The user's mistake: a correction naming identities or faces the snapshot does not have, or
    a file in ``OUT/corrections/`` that is not a corrections table."""


def requested(
    output: str | Output,
    action: str,
    identities: list[str] = (),
    faces: list[str] = (),
    name: str = "",
    author: str = "",
    note: str = "",
) -> pa.Table:
    """The rows of ``facepipe correct ACTION`` against the published snapshot: ``merge`` (two or
    more ``identities``: ``same`` rows from the first one's representative face to each other's),
    ``split`` (``faces``: each ``different`` from a face of its identity -- the representative, or
    for the representative itself its next face by distance to the centroid), ``name`` (one
    identity: a ``name`` row on its representative face)."""
    out = as_output(output)
    if (ds := out.dataset("identities")) is None or (fi := out.dataset("face_identity")) is None:
        raise CorrectionError(f"{out.uri_of()} has no identities yet: run the job (and its clustering) first")
    t = ds.to_table(columns=["identity_id", "representative_face_id"])
    rep = dict(zip(t.column("identity_id").to_pylist(), t.column("representative_face_id").to_pylist()))
    unknown = [i for i in identities if i not in rep]
    if unknown:
        raise CorrectionError(
            f"no identity {', '.join(unknown)} in {out.uri_of()}'s snapshot (face_identity.identity_id)"
        )
    if action == "merge":
        if len(set(identities)) < 2:
            raise CorrectionError("merge needs two identities or more")
        first, *rest = sorted(set(identities))
        return correction_rows("same", [(rep[first], rep[i]) for i in rest], author=author, note=note)
    if action == "name":
        if len(identities) != 1 or not name.strip():
            raise CorrectionError("name needs one identity and --name")
        return correction_rows("name", [(rep[identities[0]], None)], name=name.strip(), author=author, note=note)
    if action != "split" or identities or not faces:
        raise CorrectionError(f"no action {action!r}" if action != "split" else "split takes --face FACE_ID, not ids")
    rows = fi.to_table(columns=["face_id", "identity_id", "distance"]).to_pylist()
    pairs = [(f, _anchor(rows, rep, f, out.uri_of())) for f in faces]
    return correction_rows("different", pairs, author=author, note=note)


def _anchor(rows: list[dict], rep: dict[str, str], face: str, where: str) -> str:
    """A face of ``face``'s identity other than it: the representative, else the nearest to the centroid."""
    ident = next((r["identity_id"] for r in rows if r["face_id"] == face), None)
    if ident is None:
        raise CorrectionError(f"face {face} is in no identity of {where} (face_identity)")
    if rep[ident] != face:
        return rep[ident]
    others = sorted((r["distance"], r["face_id"]) for r in rows if r["identity_id"] == ident and r["face_id"] != face)
    if not others:
        raise CorrectionError(f"face {face} is already alone in identity {ident}")
    return others[0][1]


def record(output: str | Output, rows: pa.Table) -> str:
    """Add ``rows`` to the output's corrections (one new file, written whole or not at all)."""
    out = as_output(output)
    ident = hashlib.blake2b(",".join(rows.column("correction_id").to_pylist()).encode(), digest_size=8).hexdigest()
    path = out.path(TABLE, f"part-{ident}.parquet")
    out.atomic_write(path, rows)
    return path


def load(output: str | Output) -> pa.Table | None:
    """Every correction of the output, in the order they apply (created_at, correction_id). A
    file that is not a corrections table -- not Parquet, or rows missing what their kind needs --
    is a :class:`CorrectionError` naming it (a person or a UI wrote it: ignored, it could merge
    people someone split); ``facepipe run`` checks this before any work (``run.startup``)."""
    out = as_output(output)
    files = out.part_files(TABLE)
    return pa.concat_tables([_read(out, f) for f in files]).sort_by(_ORDER) if files else None


_ORDER = [("created_at", "ascending"), ("correction_id", "ascending")]
#: what a row of each kind must hold besides correction_id, kind, face_id and created_at
_NEEDS = {"same": "other_face_id", "different": "other_face_id", "name": "name"}


def _read(out: Output, path: str) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(path, filesystem=out.fs, schema=schema.CORRECTIONS)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise CorrectionError(f"{path} is not a corrections table ({e}): fix or remove it") from None
    for r in t.to_pylist():
        missing = [c for c in ("correction_id", "kind", "face_id", "created_at") if r[c] is None]
        if r["kind"] not in _NEEDS:
            missing.append(f"a kind of {KINDS} (it says {r['kind']!r})")
        elif r[_NEEDS[r["kind"]]] is None:
            missing.append(_NEEDS[r["kind"]])
        if missing:
            raise CorrectionError(
                f"{path}: correction {r['correction_id']!r} lacks {', '.join(missing)} "
                f"(schema: facepipe.schema.CORRECTIONS): fix or remove it"
            )
    return t


def annotate_events(
    events: list[dict],
    applied: Applied,
    name: dict[int, str],
    prev_code: np.ndarray,
    old_ids: list[str],
    face_ids: list[str],
    output: str | Output,
) -> list[dict]:
    """The clustering's events with the corrections that shaped their identities
    (``correction_ids``), plus one event per correction that changed something tonight: a face a
    cannot-link moved out of its identity (``split``, one face), a name given or changed (``name``)."""
    label_of = {v: k for k, v in name.items()}
    previous = previous_names(output) if applied.names else {}
    out = []
    for e in events:
        ids = {c for i in e["new_ids"] for c in applied.by_label.get(label_of.get(i, -1), [])}
        out.append({**e, "correction_ids": sorted(ids)})
    for row, cid in sorted(applied.moved.items()):
        old, now = int(prev_code[row]), name[int(applied.labels[row])]
        if old >= 0 and old_ids[old] != now:
            was = old_ids[old]
            out.append(_event("split", [was], [was, now], 1, [face_ids[row]], [cid]))
    for lab, (given, cid, face) in sorted(applied.names.items()):
        ident = name[lab]
        if previous.get(ident) != given:
            out.append(_event("name", [ident], [ident], 0, [face], [cid]))
    return sorted(out, key=lambda e: (e["event"], e["old_ids"], e["new_ids"]))


def _event(kind: str, old_ids: list[str], new_ids: list[str], n: int, faces: list[str], cids: list[str]) -> dict:
    return {
        "event": kind,
        "old_ids": old_ids,
        "new_ids": new_ids,
        "n_faces": n,
        "face_ids": faces,
        "correction_ids": cids,
    }


def previous_names(output: str | Output) -> dict[str, str]:
    """Identity id -> name in the published ``identities`` snapshot (named ones only)."""
    ds = as_output(output).dataset("identities")
    if ds is None:
        return {}
    t = ds.to_table(columns=["identity_id", "name"])
    return {i: n for i, n in zip(t.column("identity_id").to_pylist(), t.column("name").to_pylist()) if n is not None}
