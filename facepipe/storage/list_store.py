"""The faces' neighbour lists (:mod:`facepipe.stages.cluster.listed`), kept with the index.

Beside the kept cells (:mod:`facepipe.storage.ivf_store`), as Parquet under the output::

    OUT/_index/lists/part-RUN-UUID.parquet   a row per face: slot, nbr (its K nearest under the
                                             radius, as slots; -1 padded), dist (inf padded);
                                             K, the radius and the file's generation in the metadata

A face is named by its ``slot``, the number the cells file that added it gave it (lists of
strings would be 20 face ids a face). A night writes the lists it changed (tonight's faces', and
the old faces' tonight's came among) as one more file, in the same publish as its cells file; on
reading, the latest generation of a face's list wins. When the cells are written whole
(trained, compacted, or the lists unusable) the lists are too, under the new slots. Lists kept
for another K or radius, or that cannot be read, are not used (the night searches afresh, as
without them, and writes them whole); a list naming a face no longer clustered (an outlier now,
a rerun's lost face) is searched again when it is needed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from facepipe.storage.ivf_store import INDEX, stage_part
from facepipe.storage.output import Output

log = logging.getLogger(__name__)

LISTS = f"{INDEX}/lists"
_META = b"facepipe.lists"


@dataclass
class Kept:
    """Kept lists in the stage's face rows: ``nbr`` (N, K) rows, -1 padded; ``dist`` (N, K), inf
    padded; ``valid`` (N,): the face has a list naming only faces still clustered; ``generation``:
    the last one stored."""

    nbr: np.ndarray
    dist: np.ndarray
    valid: np.ndarray
    generation: int


def load(output: Output, slots: np.ndarray, k: int, radius: float) -> Kept | None:
    """The kept lists of the faces whose slots are ``slots`` (N,), -1 where a face has none;
    None when there are none to use (the reason logged)."""
    paths = output.part_files(LISTS)
    if not paths:
        return None
    try:
        return _read(output, paths, slots, k, radius)
    except (OSError, ValueError, KeyError, TypeError) as e:  # a cache: searched afresh, written whole
        log.warning("the kept neighbour lists cannot be read (%s: %s): searching afresh", type(e).__name__, e)
        return None


def _read(output: Output, paths: list[str], slots: np.ndarray, k: int, radius: float) -> Kept | None:
    """The metadata and slots first (small); then file by file, the latest generation last."""
    heads = [output.read_table(p, columns=["slot"]) for p in paths]
    meta = [json.loads(t.schema.metadata[_META]) for t in heads]
    if any(m["k"] != k or m["radius"] != radius for m in meta):
        log.info("the kept neighbour lists are for k / radius %s, not %s: searching afresh", meta[0], (k, radius))
        return None
    n = len(slots)
    kept = Kept(np.full((n, k), -1, np.int32), np.full((n, k), np.inf, np.float32), np.zeros(n, bool), 0)
    top = max([int(slots.max(initial=-1))] + [int(_column(t, "slot").max(initial=-1)) for t in heads])
    row = np.full(top + 2, -1, np.int64)  # slot -> row; the last entry answers -1 and unknown slots
    row[slots[slots >= 0]] = np.flatnonzero(slots >= 0)
    for i in np.argsort([m["generation"] for m in meta], kind="stable"):
        # a batch at a time: a whole file read at once held its lists twice over (3 GB at 10^7)
        for t in output.iter_batches(paths[i], columns=["slot", "nbr", "dist"], batch_size=2**16):
            bc = _column(t, "nbr", k)
            r, nb = row[_column(t, "slot")], row[np.where(bc < len(row) - 1, bc, -1)]  # past every known slot: unknown
            ok = ~((bc >= 0) & (nb < 0)).any(1)  # a neighbour left the archive: searched again when needed
            held = r >= 0
            kept.nbr[r[held]], kept.dist[r[held]], kept.valid[r[held]] = nb[held], _column(t, "dist", k)[held], ok[held]
            del t, bc, nb
        pa.default_memory_pool().release_unused()  # arrow's pool keeps what it freed
    kept.generation = max(m["generation"] for m in meta)
    return kept


def _column(t: pa.Table | pa.RecordBatch, name: str, width: int = 0) -> np.ndarray:
    c = t.column(name)
    c = c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
    return c.to_numpy() if not width else c.flatten().to_numpy().reshape(len(c), width)


def stage(
    output: Output,
    run_id: str,
    rows: np.ndarray,
    nbr: np.ndarray,
    dist: np.ndarray,
    slots: np.ndarray,
    radius: float,
    generation: int,
) -> list[str]:
    """Stage the lists ``nbr`` / ``dist`` (M, K) of the face ``rows`` (M,) to publish with the
    cells, faces named by their ``slots`` (N,, by row); the staged paths."""
    if not len(rows):
        return []
    k = nbr.shape[1]
    named = np.where(nbr >= 0, slots[np.maximum(nbr, 0)], -1).astype(np.int32)
    table = pa.table(
        {
            "slot": pa.array(slots[rows].astype(np.int32)),
            "nbr": pa.FixedSizeListArray.from_arrays(pa.array(named.reshape(-1)), k),
            "dist": pa.FixedSizeListArray.from_arrays(pa.array(dist.reshape(-1), pa.float32()), k),
        }
    ).replace_schema_metadata({_META: json.dumps({"k": k, "radius": radius, "generation": generation}).encode()})
    return [stage_part(output, run_id, "lists", table)]
