"""The cluster stage's inverted file, kept in the output from night to night.

Building the IVF neighbour index (:class:`facepipe.stages.cluster.ivf.IVFIndex`) over 10^6 faces
-- k-means cells, then every face's ``nprobe`` nearest cells -- took 43 s of a 165 s incremental
night (profiled; bench/RESULTS.md, "The face index kept in the output"). Adding faces does not
move the cells, so they are trained once and kept with each face's probes (its nearest cells,
its own first), as Parquet under the output::

    OUT/_index/quantizer/part-RUN-UUID.parquet   a row per cell: cell, centroid (encrypted like
                                                 the embeddings); how it was trained in the metadata
    OUT/_index/cells/part-RUN-UUID.parquet       a row per face: face_id, slot (its number in
                                                 the index, for good), probes
    OUT/_index/lists/part-RUN-UUID.parquet       each face's neighbours (facepipe.storage.list_store)

A night publishes the faces it added as one more cells file with the tables' journal
(:meth:`Output.publish`): a crash leaves the old index or the new one; a night that finds
:data:`COMPACT_FILES` of them rewrites them as one. The index is a cache of
the faces table: a face it lacks is assigned and added the next time the stage runs; a face it
holds that the stage does not cluster (an outlier, too small) is passed over. It is trained
again, the quantizer and every face's probes replaced in one publish, when the embedder or the
index settings changed, when the archive outgrew its cells (the cell count the archive's size
calls for is no longer the stored one), or when the cells' balance drifted past :data:`DRIFT`
times what it was at training. ``facepipe forget`` takes the erased faces out of it and
recomputes the centroids of the cells that held them (:mod:`facepipe.storage.index_erase`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import schema
from facepipe.storage.output import Output, part_name

log = logging.getLogger(__name__)

INDEX = "_index"
_META = b"facepipe.ivf"
#: the cells' imbalance (faiss's factor: nlist * sum(count^2) / N^2, 1 = even) may grow this many
#: times over its value at training before the quantizer is trained again
DRIFT = 1.5
#: a night that finds this many cells files rewrites them as one (each file is read and matched
#: against every face id when the index is opened)
COMPACT_FILES = 16
#: the files' layout; an index of another is trained again (1: no slots nor lists)
FORMAT = 2


@dataclass(frozen=True)
class Trained:
    """How a quantizer was trained: the settings a stored index must match to be reused."""

    embedder: str
    nlist: int
    nprobe: int
    seed: int
    niter: int
    train_per_cell: int
    faces: int  # faces it was trained on
    imbalance: float  # of those faces' cells
    format: int = 1  # FORMAT when it was written (indexes of format 1 did not store it)


@dataclass
class StoredCells:
    """A stored index aligned with the stage's faces: ``probes`` (N, nprobe), -1 rows for faces
    it does not hold yet; ``slots`` (N,), -1 likewise; ``next_slot``: the first slot never given."""

    centroids: np.ndarray
    probes: np.ndarray
    trained: Trained
    slots: np.ndarray
    next_slot: int

    @property
    def missing(self) -> np.ndarray:
        return np.flatnonzero(self.probes[:, 0] < 0)


def files(output: Output) -> list[str]:
    """The index's files, the quantizer first (deleted in this order, a half-deleted index has
    none and is trained again, every file of it replaced), then the cells and the lists."""
    return [f for part in ("quantizer", "cells", "lists") for f in output.part_files(f"{INDEX}/{part}")]


def imbalance(cells: np.ndarray, nlist: int) -> float:
    """faiss's imbalance factor of an assignment: 1.0 when every cell holds as many faces."""
    counts = np.bincount(np.asarray(cells, np.int64), minlength=nlist).astype(np.float64)
    total = counts.sum()
    return float(nlist * (counts**2).sum() / total**2) if total else 1.0


#: the settings a stored index must share with the stage's to be reused
SETTINGS = ("embedder", "nlist", "nprobe", "seed", "niter", "train_per_cell", "format")


def load(
    output: Output, face_ids: list[str] | pa.Array, want: Trained, keys: tuple[str, ...] = SETTINGS
) -> StoredCells | None:
    """The stored index for ``face_ids`` (in that order), or None when there is none or it must
    be trained again: its ``keys`` differ from ``want``'s, or a file of it cannot be read (it is a
    cache: the night trains it again and replaces every file; the reason is logged)."""
    try:
        return _read(output, face_ids, want, keys)
    except (OSError, ValueError, KeyError, TypeError) as e:  # pyarrow's ArrowInvalid is a ValueError
        log.warning("the kept neighbour index cannot be read (%s: %s): training it again", type(e).__name__, e)
        return None


def _read(output: Output, face_ids: list[str] | pa.Array, want: Trained, keys: tuple[str, ...]) -> StoredCells | None:
    qfiles, cfiles = output.part_files(f"{INDEX}/quantizer"), output.part_files(f"{INDEX}/cells")
    if len(qfiles) != 1:
        return None
    q = output.read_table(qfiles[0])
    trained = trained_of(q)
    if any(getattr(trained, k) != getattr(want, k) for k in keys):
        log.info("the stored index was trained for %s: training it again", {k: getattr(trained, k) for k in keys})
        return None
    centroids = np.stack(q.sort_by("cell").column("centroid").to_numpy(zero_copy_only=False)).astype(np.float32)
    probes = np.full((len(face_ids), trained.nprobe), -1, np.int32)
    slots, next_slot = np.full(len(face_ids), -1, np.int64), 0
    ids = schema.string_array(face_ids)
    for path in cfiles:
        t = output.read_table(path, columns=["face_id", "probes"] + (["slot"] if trained.format >= 2 else []))
        at = pc.index_in(ids, value_set=t.column("face_id").combine_chunks())
        have = pc.is_valid(at).to_numpy(zero_copy_only=False)
        flat = t.column("probes").combine_chunks().flatten().to_numpy().reshape(t.num_rows, trained.nprobe)
        pick = at.to_numpy(zero_copy_only=False)[have].astype(np.int64)
        slot = t.column("slot").to_numpy() if trained.format >= 2 else np.full(t.num_rows, -1, np.int64)
        probes[have], slots[have] = flat[pick], slot[pick]
        next_slot = max(next_slot, int(slot.max(initial=-1)) + 1)
    return StoredCells(centroids, probes, trained, slots, next_slot)


def trained_of(quantizer: pa.Table) -> Trained:
    """How a stored quantizer table was trained (its metadata)."""
    return Trained(**json.loads(quantizer.schema.metadata[_META]))


def drifted(trained: Trained, cells: np.ndarray) -> bool:
    """Whether the faces' own ``cells`` (tonight's assigned to the kept cells) are balanced worse
    than :data:`DRIFT` times the cells were at training (the reason is logged)."""
    now = imbalance(cells, trained.nlist)
    if now <= DRIFT * trained.imbalance:
        return False
    log.warning(
        "the stored index's cells drifted (imbalance %.2f, %.2f at training): training it again", now, trained.imbalance
    )
    return True


def save(
    output: Output,
    run_id: str,
    face_ids: list[str] | pa.Array,
    centroids: np.ndarray,
    probes: np.ndarray,
    stored: StoredCells | None,
    trained: Trained,
    lists: Callable[[np.ndarray, bool], list[str]] | None = None,
    whole: bool = False,
) -> dict:
    """Publish the index after a clustering: all of it when it was trained now (``stored`` None),
    when it has :data:`COMPACT_FILES` cells files (rewritten as one, the quantizer as it was) or
    when ``whole``, else the faces it lacked as one more cells file. ``lists(slots, whole)``
    stages the neighbour lists to publish with it (every face's slot, by row). Returns what was
    written."""
    whole = whole or stored is None or len(output.part_files(f"{INDEX}/cells")) >= COMPACT_FILES
    rows = np.arange(len(face_ids)) if whole else stored.missing
    slots = np.arange(len(face_ids)) if whole else stored.slots.copy()
    if not whole:
        slots[rows] = stored.next_slot + np.arange(len(rows))
    output.clear_staging(run_id, (INDEX,))
    staged = []
    if whole:
        q = pa.table(
            {
                "cell": pa.array(np.arange(len(centroids)), pa.int32()),
                "centroid": pa.FixedSizeListArray.from_arrays(
                    pa.array(centroids.reshape(-1), pa.float32()), centroids.shape[1]
                ),
            }
        ).replace_schema_metadata({_META: json.dumps(asdict(trained)).encode()})
        staged.append(stage_part(output, run_id, "quantizer", q))
    if len(rows):
        cells = pa.table(
            {
                "face_id": schema.string_array(face_ids).take(pa.array(rows, pa.int64())),
                "slot": pa.array(slots[rows], pa.int32()),
                "probes": pa.FixedSizeListArray.from_arrays(
                    pa.array(probes[rows].reshape(-1), pa.int32()), probes.shape[1]
                ),
            }
        )
        staged.append(stage_part(output, run_id, "cells", cells))
    staged += lists(slots, whole) if lists else []
    if staged:
        output.publish(run_id, staged, tables=(INDEX,), snapshot=whole, replace=whole)
    added = int(len(rows) if stored is None else len(stored.missing))
    compacted = whole and stored is not None
    return {"trained": stored is None, "added": added, "compacted": compacted, "nlist": trained.nlist}


def stage_part(output: Output, run_id: str, kind: str, table: pa.Table) -> str:
    """Stage one file of the index (``kind``: quantizer, cells, lists) for its publish; its path."""
    rel = f"{INDEX}/{kind}/{part_name(run_id)}"
    output.write_table(table, output.staging_path(run_id, rel))
    return rel
