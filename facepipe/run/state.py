"""Which input shards the output already holds: the state table ``OUT/_state/shards/``.

One row per input unit (an image file, a tar shard, a Parquet file) a run processed, written by
that run when it publishes (``part-RUN_ID.parquet``, replaced when the run id is rerun). A
nightly run lists its inputs and :func:`plan` s: a unit is processed again only when it is new,
when its version (size, last-modified time) changed, when some of its images could not be read
last time (``status`` retry), when ``--full`` says so, or when the run processing it is this very
run id being redone. A changed unit's earlier rows are then removed
from the other runs' files by :func:`purge` -- so the tables hold each image once, as of its
latest version.

A state file that cannot be read (truncated, overwritten: damage from outside, since every state
file is written whole or not at all) is neither trusted nor skipped -- skipping it would process
its units as new and keep their earlier rows beside the new ones. :func:`load` rebuilds its
units from the image rows its run wrote, so the plan processes them again and purges those rows;
:func:`record` then moves the damaged file aside (``_state/damaged/``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facepipe.errors import storage_error
from facepipe.stages.read.sources import Unit
from facepipe.storage import fs as fsio
from facepipe.storage.output import STATE, Output, as_output

log = logging.getLogger(__name__)

SHARDS = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_ns", pa.int64()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("dt", pa.string(), nullable=False),
        pa.field("committed_ns", pa.int64(), nullable=False),  # when the run published it
        # done, or retry: some of its images could not be read (a transient error: the storage
        # was unreachable, the object vanished) -- the next run processes the unit again
        pa.field("status", pa.string(), nullable=False),
    ],
    metadata={"facepipe.table": "_state/shards", "facepipe.schema_version": "1"},
)


@dataclass
class Plan:
    todo: list[Unit]  # to process in this run
    skipped: list[Unit]  # already in the output, unchanged
    replaced: list[str]  # URIs of todo units whose earlier rows (another run's) must go
    damaged: list[str] = field(default_factory=list)  # state files that could not be read (set aside by record)


#: the status of a row rebuilt for a damaged state file (never written: the unit is processed again)
DAMAGED = "damaged"
DAMAGED_DIR = "_state/damaged"


class Loaded(dict):
    """:func:`load`'s URI -> row mapping, with the state files it could not read (``damaged``)."""

    damaged: list[str]


def load(output: str | Output, units: list[Unit] = ()) -> Loaded:
    """URI -> the latest state row for it (the last run that processed it). A state file that
    cannot be read gives, for each of ``units`` whose images its run wrote, a row of status
    :data:`DAMAGED`, newer than any other: the unit is processed again and its earlier rows purged
    (a warning says so); the file is listed in ``damaged``."""
    out = as_output(output)
    tables, rebuilt, damaged = [], [], []
    for f in out.files(STATE, suffix=".parquet"):
        try:
            tables.append(pq.read_table(f, filesystem=out.fs, schema=SHARDS))
        except (pa.ArrowInvalid, OSError) as e:
            if storage_error(e) is not None:  # the storage, not the file: worth a rerun (exit 3)
                raise
            rebuilt += _rebuild(out, f, units, e)
            damaged.append(f)
    rows = pa.concat_tables(tables).sort_by([("committed_ns", "ascending")]).to_pylist() if tables else []
    loaded = Loaded((r["uri"], r) for r in rows + rebuilt)
    loaded.damaged = damaged
    return loaded


def _rebuild(out: Output, path: str, units: list[Unit], why: Exception) -> list[dict]:
    """Rows for the units among ``units`` whose images the damaged state file's run wrote."""
    run_id = path.rsplit("/", 1)[-1][len("part-") : -len(".parquet")]
    sources = [
        u for f in out.part_files("images", run_id=run_id)
        for u in out.read_table(f, columns=["source_uri"]).column("source_uri").to_pylist()
    ]  # fmt: skip
    hit = units_of(sources, units)
    log.warning(
        "the state file %s cannot be read (%s): its run %s wrote images of %d input units; they are processed "
        "again and their earlier rows replaced, and the file is moved to %s", fsio.to_uri(out.fs, path),
        " ".join(str(why).split())[:200], run_id, len(hit), DAMAGED_DIR,
    )  # fmt: skip
    return [
        {"uri": uri, "kind": "", "size": -1, "mtime_ns": None, "run_id": run_id, "dt": "", "committed_ns": 1 << 62,
         "status": DAMAGED}
        for uri in sorted(hit)
    ]  # fmt: skip


def plan(units: list[Unit], state: dict[str, dict], run_id: str, full: bool = False) -> Plan:
    todo, skipped, replaced = [], [], []
    for u in units:
        s = state.get(u.uri)
        same = s is not None and s["size"] == u.size and s["mtime_ns"] == u.mtime_ns and s["status"] == "done"
        if full or not same or s["run_id"] == run_id:
            todo.append(u)
            if s is not None and s["run_id"] != run_id:
                replaced.append(u.uri)
        else:
            skipped.append(u)
    return Plan(todo, skipped, replaced, list(getattr(state, "damaged", [])))


def units_of(sources: list[str], units: list[Unit]) -> set[str]:
    """URIs of the ``units`` that the image rows ``sources`` came from (``UNIT`` or ``UNIT#member``)."""
    return {u.uri for u in units if any(s == u.uri or s.startswith(u.uri + "#") for s in sources)} if sources else set()


def record(
    output: str | Output,
    run_id: str,
    dt: str,
    units: list[Unit],
    retry: set[str] = frozenset(),
    damaged: list[str] = (),
) -> None:
    """Write this run's state file (replacing an earlier attempt's): the last step of publishing.
    ``retry``: URIs of units to process again next time (an image of theirs could not be read).
    ``damaged``: state files that could not be read, whose units this run processed again: moved
    aside once this run's state is written."""
    now = time.time_ns()
    t = pa.table(
        {
            "uri": [u.uri for u in units],
            "kind": [u.kind for u in units],
            "size": pa.array([u.size for u in units], pa.int64()),
            "mtime_ns": pa.array([u.mtime_ns for u in units], pa.int64()),
            "run_id": [run_id] * len(units),
            "dt": [dt] * len(units),
            "committed_ns": pa.array([now] * len(units), pa.int64()),
            "status": ["retry" if u.uri in retry else "done" for u in units],
        },
        schema=SHARDS,
    )
    out = as_output(output)
    out.atomic_write(out.path(STATE, f"part-{run_id}.parquet"), t)
    for path in damaged:
        if path != out.path(STATE, f"part-{run_id}.parquet"):  # this run's own: just replaced
            out.fs.create_dir(out.path(DAMAGED_DIR), recursive=True)
            out.fs.move(path, out.path(DAMAGED_DIR, f"{path.rsplit('/', 1)[-1]}.{now}"))


def purge(output: str | Output, uris: list[str], keep_run: str) -> dict[str, int]:
    """Remove every row that came from ``uris`` (their images, faces and outlier scores) from the
    files of runs other than ``keep_run``, and their faces from the identity snapshot: a face id
    names (image, face index), so the new content's faces carry the old ids and must be placed
    again, not inherit the old faces' identities. Returns rows removed per table."""
    removed = {"images": 0, "faces": 0, "face_outliers": 0, "face_identity": 0}
    if not uris:
        return removed
    out = as_output(output)
    fs = out.fs
    wanted = pa.array(sorted(set(uris)), pa.string())
    gone_images: list[pa.Array] = []
    for path in out.part_files("images", exclude_run=keep_run):
        src = pq.read_table(path, filesystem=fs, columns=["source_uri", "image_id"])
        hit = pc.is_in(src.column("source_uri"), value_set=wanted)  # an image unit's own row
        for member in ("#.*$", "#[^#]*$"):  # a tar / Parquet unit's rows: "UNIT#member" ('#' may sit in either part)
            hit = pc.or_(
                hit,
                pc.is_in(
                    pc.replace_substring_regex(src.column("source_uri"), pattern=member, replacement=""),
                    value_set=wanted,
                ),
            )
        if pc.any(hit).as_py():
            gone_images.append(src.column("image_id").filter(hit).combine_chunks())
            removed["images"] += out.delete_rows(path, pc.invert(hit))
    if not gone_images:
        return removed
    images = pa.chunked_array(gone_images).combine_chunks()
    gone_faces: list[pa.Array] = []
    for path in out.part_files("faces", exclude_run=keep_run):
        f = pq.read_table(path, filesystem=fs, columns=["image_id", "face_id"])
        hit = pc.is_in(f.column("image_id"), value_set=images)
        if pc.any(hit).as_py():
            gone_faces.append(f.column("face_id").filter(hit).combine_chunks())
            removed["faces"] += out.delete_rows(path, pc.invert(hit))
    if gone_faces:
        faces = pa.chunked_array(gone_faces).combine_chunks()
        for table, skip in (("face_outliers", keep_run), ("face_identity", None)):
            for path in out.part_files(table, exclude_run=skip):
                f = pq.read_table(path, filesystem=fs, columns=["face_id"])
                hit = pc.is_in(f.column("face_id"), value_set=faces)
                if pc.any(hit).as_py():
                    removed[table] += out.delete_rows(path, pc.invert(hit))
    return removed
