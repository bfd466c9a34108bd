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
the same schema (a UI, a SQL ``COPY``). :func:`apply` runs after every clustering, full or
incremental, on its labels: must-links first (two groups joined unless that would put two faces
of one image, or the two faces of a ``different`` row, in one identity -- a cannot-link always
wins), then cannot-links (the named face leaves for an identity of its own), then names (the
latest row per identity). Corrections are applied in their own order (``created_at``, then
``correction_id``), never the order of the files, so the result does not depend on how they
were written. A correction whose face is not clustered (erased, an outlier, too small) waits.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import schema
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
    """A correction that names identities or faces the snapshot does not have (the user's mistake)."""


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
    """Every correction of the output, in the order they apply (created_at, correction_id)."""
    out = as_output(output)
    files = out.part_files(TABLE)
    if not files:
        return None
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, filesystem=out.fs, schema=schema.CORRECTIONS) for f in files]
    t = pa.concat_tables(tables)
    bad = set(t.column("kind").to_pylist()) - set(KINDS)
    if bad:
        log.warning("corrections of unknown kinds %s are ignored", sorted(bad))
        t = t.filter(pc.is_in(t.column("kind"), value_set=pa.array(KINDS)))
    return t.sort_by([("created_at", "ascending"), ("correction_id", "ascending")])


@dataclass
class Applied:
    labels: np.ndarray  # the labels with the corrections in force; new groups numbered past the others
    names: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # label -> (name, correction id, face id)
    by_label: dict[int, list[str]] = field(default_factory=dict)  # label -> correction ids that shaped it
    moved: dict[int, str] = field(default_factory=dict)  # row moved out by a cannot-link -> its correction id
    in_force: int = 0  # corrections whose faces are clustered, less the refused ones
    waiting: int = 0  # corrections whose faces are not clustered
    conflicts: list[str] = field(default_factory=list)  # must-links refused (a cannot-link wins)

    def given(self) -> dict[int, str]:
        """Label -> the name a correction gave it."""
        return {lab: g[0] for lab, g in self.names.items()}

    def summary(self) -> dict:
        return {"in_force": self.in_force, "waiting": self.waiting, "refused": self.conflicts}


def apply(
    face_ids: list[str], labels: np.ndarray, image_ids: np.ndarray | None, corrections: pa.Table | None
) -> Applied:
    """``labels`` (N,) of the faces ``face_ids`` with ``corrections`` in force (see the module text)."""
    labels = np.asarray(labels, np.int64).copy()
    res = Applied(labels)
    if corrections is None or corrections.num_rows == 0:
        return res
    pos = {f: i for i, f in enumerate(face_ids)}
    ends = lambda r: (r["face_id"],) if r["kind"] == "name" else (r["face_id"], r["other_face_id"])  # noqa: E731
    live = [r for r in corrections.to_pylist() if all(e in pos for e in ends(r))]
    res.waiting = corrections.num_rows - len(live)
    fresh = iter(range(int(labels.max(initial=-1)) + 1, 2**62))
    for r in live:  # a face a correction names stands in an identity, even if it was left alone
        for e in (r["face_id"], r.get("other_face_id")):
            if e in pos and labels[pos[e]] < 0:
                labels[pos[e]] = next(fresh)
    _join(labels, pos, image_ids, live, res)
    for r in (r for r in live if r["kind"] == "different"):
        i, j = pos[r["face_id"]], pos[r["other_face_id"]]
        if labels[i] == labels[j]:
            labels[i] = next(fresh)
            res.moved[i] = r["correction_id"]
            res.by_label.setdefault(int(labels[i]), []).append(r["correction_id"])
    for r in (r for r in live if r["kind"] == "name"):
        lab = int(labels[pos[r["face_id"]]])
        res.names[lab] = (r["name"], r["correction_id"], r["face_id"])  # the latest row wins
    present = set(labels.tolist())
    res.by_label = {lab: ids for lab, ids in res.by_label.items() if lab in present}
    res.labels, res.in_force = labels, len(live) - len(res.conflicts)
    return res


def _join(labels: np.ndarray, pos: dict, image_ids: np.ndarray | None, live: list[dict], res: Applied) -> None:
    """The must-links of ``live``, in order, on ``labels`` (in place): two groups become one unless
    that puts two faces of one image, or both faces of a ``different`` row, in it (refused)."""
    parent: dict[int, int] = {}
    members: dict[int, set[int]] = {}  # a group's rows, found once per label and joined on union

    def find(a: int) -> int:
        while parent.get(a, a) != a:
            a = parent[a]
        return a

    def rows_of(lab: int) -> set[int]:
        if lab not in members:
            members[lab] = set(np.flatnonzero(labels == lab).tolist())
        return members[lab]

    apart = [(pos[r["face_id"]], pos[r["other_face_id"]]) for r in live if r["kind"] == "different"]
    for r in (r for r in live if r["kind"] == "same"):
        a, b = find(int(labels[pos[r["face_id"]]])), find(int(labels[pos[r["other_face_id"]]]))
        if a == b:
            continue
        joined = rows_of(a) | rows_of(b)
        clash = image_ids is not None and len(set(image_ids[list(joined)].tolist())) < len(joined)
        if clash or any(i in joined and j in joined for i, j in apart):
            res.conflicts.append(r["correction_id"])
            log.warning(
                "correction %s (%s and %s are one person) is refused: it would put two faces of one image, "
                "or two faces said to be different people, in one identity", *(r[k] for k in _SAME),
            )  # fmt: skip
            continue
        keep, gone = min(a, b), max(a, b)
        parent[gone], members[keep] = keep, joined
        members.pop(gone, None)
        res.by_label.setdefault(keep, []).append(r["correction_id"])
    for lab in [lab for lab in set(labels.tolist()) if lab in parent]:
        labels[labels == lab] = find(lab)


_SAME = ("correction_id", "face_id", "other_face_id")


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
