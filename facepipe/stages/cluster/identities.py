"""The identity tables: the archive's faces read back, and the ``identities`` / ``face_identity``
tables built from a clustering (each identity's statistics: :mod:`facepipe.stages.cluster.stats`;
``identity_events``: :mod:`facepipe.stages.cluster.naming`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import schema
from facepipe.errors import StorageError
from facepipe.stages.cluster.arrays import Names
from facepipe.stages.cluster.stats import IdentityStats, Kept, distances, identity_stats
from facepipe.storage.output import Output, as_output

log = logging.getLogger(__name__)

#: faces narrower than this (pixels of the image) are left out of the identities (``too_small``)
#: by default (``ClusterConfig.min_face``); the outlier stage's detail term judges only wider ones
MIN_FACE_WIDTH = 40


@dataclass
class FaceSet:
    face_ids: Sequence[str]  # sorted (:class:`Names` when read from an output)
    x: np.ndarray  # (N, D) float32
    det_score: np.ndarray
    dt: np.ndarray  # datetime64[D]
    embedder: str
    #: (N,) the image of each face: two faces of one image are two people (the stage's: int64, a
    #: number per image, equal for equal image ids -- not 10^7 strings)
    image_ids: np.ndarray | None = None
    width: np.ndarray | None = None  # (N,) box width in pixels
    #: faces of the archive left out of clustering -> why (a ``face_identity`` status)
    left_out: dict[str, str] = field(default_factory=dict)

    def id_array(self) -> pa.Array:
        return self.face_ids.arrow if isinstance(self.face_ids, Names) else schema.string_array(self.face_ids)


def flagged_faces(output: str | Output) -> dict[str, str]:
    """Face id -> ``outlier`` for the faces the outlier stage flagged (``is_outlier`` in any of
    their ``face_outliers`` rows)."""
    ds = as_output(output).dataset("face_outliers")
    if ds is None:
        return {}
    t = ds.to_table(columns=["face_id"], filter=pc.field("is_outlier"))
    return dict.fromkeys(t.column("face_id").to_pylist(), "outlier")


def load_faces(output: str | Output, exclude: dict[str, str] | None = None, min_width: float = 0) -> FaceSet | None:
    """The archive's faces of its most common embedder, sorted by face id; ``exclude``: face id ->
    why it is left out, and faces narrower than ``min_width`` pixels are left out as ``too_small``
    (both recorded in ``FaceSet.left_out``, ``exclude``'s reason first). Read in two passes -- the
    face ids, embedders and boxes, then the rest batch by batch into place, the faces left out
    never read -- so the faces table is never held whole (at 10^7 faces it is 12 GB beside the
    5 GB of embeddings) and no embedding is copied to leave a face out."""
    faces_ds = as_output(output).dataset("faces")
    if faces_ds is None:
        return None
    keys = faces_ds.to_table(columns=["face_id", "embedder", "x1", "x2"])
    if keys.num_rows == 0:
        return None
    counts = pc.value_counts(keys.column("embedder")).to_pylist()
    embedders = {c["values"]: c["counts"] for c in counts}
    embedder = max(embedders.items(), key=lambda kv: (kv[1], kv[0]))[0]
    if len(embedders) > 1:
        log.warning("faces of several embedders %s: clustering those of %s only", embedders, embedder)
    mine = pc.equal(keys.column("embedder"), embedder).to_numpy(zero_copy_only=False)
    width = pc.subtract(keys.column("x2"), keys.column("x1")).to_numpy(zero_copy_only=False)
    keep, left_out = _left_out(keys.column("face_id"), mine, width, exclude or {}, min_width)
    kept_ids = keys.column("face_id").filter(keep)
    order = pc.sort_indices(kept_ids).to_numpy()
    at = np.full(len(keep), -1, np.int64)  # each row's place in face-id order (-1: not read)
    rows = np.flatnonzero(keep)[order]
    at[rows] = np.arange(len(order))
    fs = _read_in_place(faces_ds, keys.column("face_id"), at, len(order))
    fs.face_ids, fs.embedder = Names(kept_ids.take(order)), embedder
    fs.width, fs.left_out = width[rows].astype(np.float32), left_out
    del keys, kept_ids
    pa.default_memory_pool().release_unused()  # arrow's pool keeps what it freed (0.8 GB at 10^6)
    return fs


def _left_out(
    face_ids: pa.ChunkedArray, mine: np.ndarray, width: np.ndarray, exclude: dict[str, str], min_width: float
) -> tuple[np.ndarray, dict[str, str]]:
    """(rows clustered, face id -> why) of the faces of the embedder (rows ``mine``): those
    ``exclude`` names and those narrower than ``min_width`` (``too_small``) are left out."""
    out = width < min_width if min_width else np.zeros(len(mine), bool)  # no width (NaN): kept
    if exclude:
        out |= pc.is_in(face_ids, value_set=pa.array(list(exclude), pa.string())).to_numpy(zero_copy_only=False)
    out &= mine
    gone = face_ids.filter(out).to_pylist() if out.any() else []
    return mine & ~out, {f: exclude.get(f, "too_small") for f in gone}


#: a writer changed the faces between the two passes of :func:`load_faces` (exit 3: run it again)
_CHANGED = "the faces table changed while it was read: run the stage again"


def _read_in_place(ds, face_ids: pa.ChunkedArray, at: np.ndarray, n: int) -> FaceSet:
    """The faces' columns read batch by batch (the rows in the order ``face_ids`` was read in, which
    each batch is checked against), row ``i`` placed at ``at[i]`` (-1: skipped). ``face_ids`` and
    ``embedder`` of the result are left for the caller."""
    typ = ds.schema.field("embedding").type  # its size from the files' schema (else from the first batch)
    dim = typ.list_size if pa.types.is_fixed_size_list(typ) else 0
    fs = FaceSet([], np.empty((n, dim), np.float32), np.empty(n, np.float32), np.empty(n, "datetime64[D]"), "")
    images, placed = [], []
    start, cols = 0, ["face_id", "image_id", "embedding", "det_score", "dt"]
    # row group by row group: pre-buffered (the default), every row group of a file is read at once
    opts = ds.format.default_fragment_scan_options  # the output's own (its decryption, if any)
    opts.pre_buffer = False
    for batch in ds.to_batches(
        columns=cols, batch_size=65_536, batch_readahead=2, fragment_readahead=1, fragment_scan_options=opts
    ):
        rows = at[start : start + batch.num_rows]
        if not batch.column("face_id").equals(face_ids.slice(start, batch.num_rows).combine_chunks()):
            raise StorageError(_CHANGED)
        start += batch.num_rows
        to = rows[rows >= 0]
        if not len(to):
            continue
        if len(to) < len(rows):  # another embedder's rows among them (else no copy of the batch)
            batch = batch.filter(pa.array(rows >= 0))
        emb = batch.column("embedding").flatten().to_numpy(zero_copy_only=False).reshape(len(to), -1)
        if not fs.x.shape[1]:
            fs.x = np.empty((n, emb.shape[1]), np.float32)
        fs.x[to] = emb
        fs.det_score[to] = batch.column("det_score").to_numpy(zero_copy_only=False)
        fs.dt[to] = pc.cast(batch.column("dt"), pa.date32()).to_numpy(zero_copy_only=False)
        images.append(batch.column("image_id"))
        placed.append(to)
        del batch
        pa.default_memory_pool().release_unused()  # what each batch took, given back at once
    if start != len(at):
        raise StorageError(_CHANGED)
    fs.image_ids = _numbered(images, placed, n)
    return fs


def _numbered(images: list[pa.Array], placed: list[np.ndarray], n: int) -> np.ndarray:
    """(n,) int64: the image ids of the batches (``images``, their rows at ``placed``) as numbers,
    one per distinct id (no id: -1, one image as before)."""
    out = np.full(n, -1, np.int64)
    if images:
        coded = pa.chunked_array(images, pa.string()).dictionary_encode()
        for chunk, to in zip(coded.chunks, placed):
            out[to] = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    return out


def identity_tables(
    fs: FaceSet,
    labels: np.ndarray,
    name: dict[int, str],
    run_id: str,
    given: dict[int, str] | None = None,
    kept: Kept | None = None,
) -> tuple[pa.Table, pa.Table]:
    """(identities, face_identity) snapshot tables: centroid, distance to it, representative
    (highest detection score), first/last seen, the name ``given`` (label -> name) by a
    correction; ``fs.left_out`` faces get the status it gives them. ``kept``: centroids of the
    last snapshot an identity keeps where its faces are the same (:mod:`facepipe.stages.cluster.stats`)."""
    dim = fs.x.shape[1]
    st = identity_stats(labels, fs.x, fs.det_score, fs.dt, kept)
    counts, cent, rep, first, last = st.counts, st.centroid, st.representative, st.first_day, st.last_day
    m = len(st.labels)
    dist = distances(fs.x, st)
    ids = pa.array([name[lab] for lab in st.labels.tolist()], pa.string())
    order = pc.sort_indices(ids).to_numpy()  # bytewise: the order Python sorts the ids in
    named = (
        pa.array([given.get(lab) for lab in st.labels[order].tolist()], pa.string())
        if given
        else pa.nulls(m, pa.string())
    )
    identities = pa.table(
        {
            "identity_id": ids.take(order),
            "n_faces": pa.array(counts[order], pa.int64()),
            "centroid": pa.FixedSizeListArray.from_arrays(pa.array(cent[order].reshape(-1), pa.float32()), dim),
            "representative_face_id": fs.id_array().take(pa.array(rep[order])),
            "first_seen_dt": pa.array(first[order].astype("datetime64[D]"), pa.date32()),
            "last_seen_dt": pa.array(last[order].astype("datetime64[D]"), pa.date32()),
            "embedder": pa.repeat(pa.scalar(fs.embedder, pa.string()), m),
            "run_id": pa.repeat(pa.scalar(run_id, pa.string()), m),
            "name": named,
        },
        schema=schema.identities_schema(dim),
    )
    return identities, _face_identity(fs, labels, st, ids, dist, run_id)


def _face_identity(
    fs: FaceSet, labels: np.ndarray, st: IdentityStats, ids: pa.Array, dist: np.ndarray, run_id: str
) -> pa.Table:
    """The ``face_identity`` rows: the clustered faces (their identity's id ``ids[st.inverse]``),
    then those ``fs.left_out``, by face id -- built in Arrow (Python lists of every face took
    seconds at 3x10^6)."""
    out_ids = sorted(fs.left_out)
    n, k = len(labels), len(out_ids)
    ident = np.full(n + k, -1, np.int64)
    ident[st.assigned] = st.inverse
    statuses = ["assigned", "unassigned", *sorted(set(fs.left_out.values()))]
    status = np.r_[np.where(labels >= 0, 0, 1), [statuses.index(fs.left_out[f]) for f in out_ids]].astype(np.int32)
    coded = lambda codes, values: pa.DictionaryArray.from_arrays(  # noqa: E731
        pa.array(codes, mask=codes < 0), values
    ).cast(pa.string())
    face_identity = pa.table(
        {
            "face_id": pa.concat_arrays([fs.id_array(), pa.array(out_ids, pa.string())]),
            "identity_id": coded(ident, ids),
            "distance": pa.array(np.r_[dist, np.full(k, np.nan, np.float32)], pa.float32(), from_pandas=True),
            "status": coded(status, pa.array(statuses, pa.string())),
            "run_id": pa.repeat(pa.scalar(run_id, pa.string()), n + k),
        },
        schema=schema.FACE_IDENTITY,
    )
    return face_identity.sort_by("face_id") if k else face_identity  # the clustered faces come sorted


def identity_rows(out: Output, left: dict[str, list[str]]) -> dict[str, dict]:
    """The ``identities`` columns (n_faces, centroid, representative, first/last seen) of each
    identity recomputed from the faces ``left`` to it (an erasure removed the others)."""
    import pyarrow.dataset as pads

    face_to_ident = {f: i for i, fs_ in left.items() for f in fs_}
    ds = out.dataset("faces")
    t = ds.to_table(
        columns=["face_id", "embedding", "det_score", "dt"], filter=pads.field("face_id").isin(sorted(face_to_ident))
    )
    t = t.sort_by("face_id")  # as the cluster stage orders faces: ties go the same way
    face_ids = t.column("face_id").to_pylist()
    idents = sorted(left)
    number = {ident: k for k, ident in enumerate(idents)}
    st = identity_stats(
        np.array([number[face_to_ident[f]] for f in face_ids], np.int64),
        schema.embedding_matrix(t.column("embedding")),
        t.column("det_score").to_numpy(zero_copy_only=False),
        np.array(t.column("dt").to_pylist(), "datetime64[D]").astype(np.int64),
    )
    day = lambda d: np.datetime64(int(d), "D").astype(object)  # noqa: E731 -- int days -> datetime.date
    return {
        idents[lab]: {
            "n_faces": int(st.counts[k]),
            "centroid": st.centroid[k].tolist(),
            "representative_face_id": face_ids[st.representative[k]],
            "first_seen_dt": day(st.first_day[k]),
            "last_seen_dt": day(st.last_day[k]),
        }
        for k, lab in enumerate(st.labels)
    }
