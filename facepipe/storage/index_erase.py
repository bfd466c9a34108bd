"""``facepipe forget`` on the kept neighbour index: the erased faces leave it, and it is kept.

The index (:mod:`facepipe.storage.ivf_store`, :mod:`facepipe.storage.list_store`) used to be
dropped whole by an erasure, which made the next night train it again -- every face assigned
to new cells, every list the night needs searched afresh: at 3x10^6 faces 346 s where the
night takes 51 s with the index kept (bench/RESULTS.md, "An erasure keeps the index"). An
erasure now rewrites, with the tables, only what names an erased face:

- the cells files' rows of the erased faces (a slot, and probes derived from the embedding);
- the lists files' rows of the erased faces and every list that names one (a distance to an
  erased face is derived from it too; such a face's list is unknown afterwards, and a night
  searches it afresh when it needs it, as after any face left the archive);
- the centroid of every cell that held an erased face, recomputed as the mean of the faces the
  cell keeps: a k-means centroid is a mean of faces, the erased ones possibly among them, and
  no erased embedding survives in one. (The other centroids, trained on a sample, keep only the
  indirect dependence any trained model has: docs/privacy.md.)

An index that cannot be read, of the first format (no slots), or with a cell the erasure leaves
empty is dropped whole, as before: the next night trains it again.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import schema
from facepipe.storage import ivf_store
from facepipe.storage.list_store import LISTS
from facepipe.storage.output import Output, without_rows

log = logging.getLogger(__name__)

#: a file of the index, what it keeps (None: delete it) and the rows it loses
Rewrite = tuple[str, pa.Table | None, int]
#: rows read at a time where a file is only looked through
BATCH = 65_536


def index_rewrites(out: Output, face_ids: set[str]) -> list[Rewrite]:
    """The rewrites of the index's files that erase ``face_ids`` from it (see the module text)."""
    files = ivf_store.files(out)
    if not face_ids or not files:
        return []
    try:
        kept = _without(out, pa.array(sorted(face_ids), pa.string()))
    except (OSError, ValueError, KeyError, TypeError) as e:  # a cache: dropped, trained again
        log.warning("the kept neighbour index cannot be read (%s: %s): dropping it", type(e).__name__, e)
        kept = None
    return [(f, None, 0) for f in files] if kept is None else kept


def _without(out: Output, erased: pa.Array) -> list[Rewrite] | None:
    qfiles = out.part_files(f"{ivf_store.INDEX}/quantizer")
    if len(qfiles) != 1:
        return None
    q = out.read_table(qfiles[0])
    trained = ivf_store.trained_of(q)
    if trained.format < 2:
        return None
    rewrites, slots, cells = [], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for path in out.part_files(f"{ivf_store.INDEX}/cells"):
        t = out.read_table(path)
        hit = pc.fill_null(pc.is_in(t.column("face_id"), value_set=erased), False)
        if pc.any(hit).as_py():
            gone = t.filter(hit)
            slots.append(gone.column("slot").to_numpy().astype(np.int64))
            cells.append(_own_cells(gone.column("probes"), trained.nprobe))
            rewrites.append((path, *without_rows(t, pc.invert(hit))))
    if not rewrites:
        return []
    centroids = _recomputed(out, q, np.unique(np.concatenate(cells)), erased, trained.nprobe)
    if centroids is None:
        return None
    flat = pa.array(centroids.reshape(-1), pa.float32())
    column = pa.FixedSizeListArray.from_arrays(flat, centroids.shape[1])
    q2 = q.set_column(q.schema.get_field_index("centroid"), q.schema.field("centroid"), column)
    rewrites.append((qfiles[0], q2.replace_schema_metadata(q.schema.metadata), 0))
    return rewrites + _lists(out, np.unique(np.concatenate(slots)))


def _own_cells(probes: pa.Array | pa.ChunkedArray, nprobe: int) -> np.ndarray:
    """Each cells row's own cell: the first of its ``probes``."""
    probes = probes.combine_chunks() if isinstance(probes, pa.ChunkedArray) else probes
    return probes.flatten().to_numpy().reshape(len(probes), nprobe)[:, 0].astype(np.int64)


def _recomputed(out: Output, q: pa.Table, cells: np.ndarray, erased: pa.Array, nprobe: int) -> np.ndarray | None:
    """The quantizer's centroids (rows by cell) with those of ``cells`` the mean of the faces
    they keep; None when one keeps none. The faces are read a batch at a time: only theirs are
    held, never a faces file's embeddings."""
    ids, cell_of = _members(out, cells, erased, nprobe)
    if len(np.unique(cell_of)) < len(cells):
        return None
    centroids = np.stack(q.column("centroid").to_numpy(zero_copy_only=False)).astype(np.float32)
    sums, counts = np.zeros((len(centroids), centroids.shape[1])), np.zeros(len(centroids), np.int64)
    seen = np.zeros(len(ids), bool)  # a face held twice (a rerun's row) counts once
    for path in out.part_files("faces"):
        for b in out.iter_batches(path, columns=["face_id", "embedding"], batch_size=BATCH):
            at = pc.fill_null(pc.index_in(b.column("face_id"), value_set=ids), -1).to_numpy().astype(np.int64)
            pos, first = np.unique(at, return_index=True)
            new = (pos >= 0) & ~seen[np.maximum(pos, 0)]
            pos, rows = pos[new], first[new]
            seen[pos] = True
            x = schema.embedding_matrix(b.column("embedding").take(pa.array(rows))).astype(np.float64)
            np.add.at(sums, cell_of[pos], x)
            np.add.at(counts, cell_of[pos], 1)
    if (counts[cells] == 0).any():
        return None
    row = np.empty(len(centroids), np.int64)
    row[q.column("cell").to_numpy()] = np.arange(len(centroids))
    centroids[row[cells]] = (sums[cells] / counts[cells, None]).astype(np.float32)
    return centroids


def _members(out: Output, cells: np.ndarray, erased: pa.Array, nprobe: int) -> tuple[pa.Array, np.ndarray]:
    """The faces ``cells`` keep (their ids, and each one's cell)."""
    ids, cell_of = [pa.array([], pa.string())], [np.zeros(0, np.int64)]
    for path in out.part_files(f"{ivf_store.INDEX}/cells"):
        for b in out.iter_batches(path, columns=["face_id", "probes"], batch_size=BATCH):
            own = _own_cells(b.column("probes"), nprobe)
            gone = pc.fill_null(pc.is_in(b.column("face_id"), value_set=erased), False).to_numpy(zero_copy_only=False)
            keep = np.isin(own, cells) & ~gone
            ids.append(b.column("face_id").filter(pa.array(keep)))
            cell_of.append(own[keep])
    return pa.concat_arrays(ids), np.concatenate(cell_of)


def _lists(out: Output, slots: np.ndarray) -> list[Rewrite]:
    """The lists files without the erased faces' lists nor any list that names one."""
    rewrites = []
    for path in out.part_files(LISTS):
        t = out.read_table(path)
        nbr = t.column("nbr").combine_chunks()
        k = nbr.type.list_size
        hit = np.isin(t.column("slot").to_numpy(), slots) | np.isin(
            nbr.flatten().to_numpy().reshape(t.num_rows, k), slots
        ).any(1)
        if hit.any():
            rewrites.append((path, *without_rows(t, pa.array(~hit))))
    return rewrites
