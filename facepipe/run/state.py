"""Which input shards the output already holds: the state table ``OUT/_state/shards/``.

One row per input unit (an image file, a tar shard, a Parquet file) a run processed, written by
that run when it publishes (``part-RUN_ID.parquet``, replaced when the run id is rerun). A
nightly run lists its inputs and :func:`plan` s: a unit is processed again only when it is new,
when its version (size, last-modified time) changed, when some of its images could not be read
last time (``status`` retry), when ``--full`` says so, or when the run processing it is this very
run id being redone. A changed unit's earlier rows are then removed
from the other runs' files by :func:`purge` -- so the tables hold each image once, as of its
latest version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facepipe.stages.read.sources import Unit
from facepipe.storage.output import STATE, Output, as_output

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


def load(output: str | Output) -> dict[str, dict]:
    """URI -> the latest state row for it (the last run that processed it)."""
    out = as_output(output)
    files = out.files(STATE, suffix=".parquet")
    if not files:
        return {}
    t = pa.concat_tables([pq.read_table(f, filesystem=out.fs, schema=SHARDS) for f in files])
    return {r["uri"]: r for r in t.sort_by([("committed_ns", "ascending")]).to_pylist()}


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
    return Plan(todo, skipped, replaced)


def units_of(sources: list[str], units: list[Unit]) -> set[str]:
    """URIs of the ``units`` that the image rows ``sources`` came from (``UNIT`` or ``UNIT#member``)."""
    return {u.uri for u in units if any(s == u.uri or s.startswith(u.uri + "#") for s in sources)} if sources else set()


def record(output: str | Output, run_id: str, dt: str, units: list[Unit], retry: set[str] = frozenset()) -> None:
    """Write this run's state file (replacing an earlier attempt's): the last step of publishing.
    ``retry``: URIs of units to process again next time (an image of theirs could not be read)."""
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
