"""Tombstones: what erasure requests (``facepipe forget``) removed, kept so no later run brings
it back. ``OUT/_tombstones/part-REQUEST.parquet`` lists erased image ids, source prefixes and face
ids; the job reads them before it reads anything else (:func:`load_tombstones`), never decodes an
erased image (:func:`drop_erased_rows`) and never writes an erased face (``stages.write``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facepipe.storage.output import TOMBSTONES as TOMBSTONES_DIR
from facepipe.storage.output import Output, as_output

TOMBSTONES = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),  # image_id | source_prefix | face_id
        pa.field("value", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("erased_at", pa.timestamp("s", tz="UTC"), nullable=False),
    ],
    metadata={"facepipe.table": "_tombstones", "facepipe.schema_version": "1"},
)
TOMBSTONE_KINDS = ("image_id", "source_prefix", "face_id")


@dataclass
class Tombstones:
    """What erasure requests removed; the job's reader skips all of it.

    Prefixes are matched on ``source_uri`` as strings (``s3://bucket/people/alice/`` covers
    every object below it and every member of a tar or Parquet unit below it).
    """

    image_ids: frozenset[str] = frozenset()
    source_prefixes: tuple[str, ...] = ()
    face_ids: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.image_ids or self.source_prefixes or self.face_ids)

    def covers_uri(self, uri: str) -> bool:
        return any(uri.startswith(p) for p in self.source_prefixes)

    def erased_images(self, image_ids: list[str], source_uris: list[str]) -> np.ndarray:
        """Boolean mask of the rows whose image is erased (by id or by source prefix)."""
        return np.array([i in self.image_ids or self.covers_uri(u) for i, u in zip(image_ids, source_uris)], bool)


def load_tombstones(output: str | Output) -> Tombstones:
    """Every tombstone of ``output`` (empty when there are none)."""
    out = as_output(output)
    files = out.files(TOMBSTONES_DIR, suffix=".parquet")
    if not files:
        return Tombstones()
    t = pa.concat_tables([pq.read_table(f, filesystem=out.fs, schema=TOMBSTONES) for f in files])
    kinds, values = t.column("kind").to_pylist(), t.column("value").to_pylist()
    of = lambda k: [v for kk, v in zip(kinds, values) if kk == k]  # noqa: E731
    return Tombstones(frozenset(of("image_id")), tuple(sorted(set(of("source_prefix")))), frozenset(of("face_id")))


def write_tombstones(out: Output, request_id: str, marks: list[tuple[str, str]], when: datetime) -> None:
    """One request's tombstones, ``(kind, value)`` pairs, written whole (before any table changes)."""
    tomb = pa.table(
        {
            "kind": [k for k, _ in marks],
            "value": [v for _, v in marks],
            "request_id": [request_id] * len(marks),
            "erased_at": pa.array([when] * len(marks), pa.timestamp("s", tz="UTC")),
        },
        schema=TOMBSTONES,
    )
    out.atomic_write(out.path(TOMBSTONES_DIR, f"part-{request_id}.parquet"), tomb)


def drop_erased_rows(batch: dict[str, np.ndarray], tombstones: Tombstones) -> dict[str, np.ndarray]:
    """Ray adapter body, right after reading: remove the rows of erased images, before a pixel of
    them is decoded."""
    erased = tombstones.erased_images(list(batch["image_id"]), list(batch["source_uri"]))
    if not erased.any():
        return batch
    keep = ~erased
    return {k: v[keep] for k, v in batch.items()}
