"""The archive's faces as a search index (``facepipe search``; :mod:`facepipe.tools.search` runs the
queries): :meth:`FaceIndex.open` reads the faces of the output's largest model group (one
detector, embedder and align method -- what a query must be embedded with), their images'
``source_uri`` and the ``face_identity`` snapshot's identity ids, leaving out what an erasure's
tombstones name. Up to :data:`EXACT_MAX` faces the nearest are exact (a blocked matrix product on
torch); beyond, FAISS's inverted file, on the cells the cluster stage keeps in the output when
there are (``storage.ivf_store``: no training at open); a batch of :data:`BATCH` query faces or
more is scanned cell by cell (:mod:`facepipe.tools.batch_scan`), fewer query by query. The index
lives in memory while it is open; bench/RESULTS.md ("Search by face") has its open time, latency
and recall.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import schema
from facepipe.errors import UserError
from facepipe.storage import ivf_store
from facepipe.storage.output import Output, as_output
from facepipe.storage.tombstones import Tombstones, load_tombstones
from facepipe.tools.batch_scan import CellScan

#: exact search up to this many faces (single-query p50 7 ms at 10^5 faces on 2 cores; 70 ms at 10^6)
EXACT_MAX = 200_000
#: the share of the inverted file's cells a query scans: at 10^6 synthetic faces (1,000 cells)
#: 32 cells gave recall@10 0.902, 128 0.979, 256 0.997 (p50 2 / 9 / 17 ms; bench/RESULTS.md)
PROBE_SHARE = 0.25
#: from this many query faces at once, the inverted file is scanned cell by cell
#: (:mod:`facepipe.tools.batch_scan`); fewer go to FAISS's own search, query by query
BATCH = 64


@dataclass(frozen=True)
class Hit:
    """One result line: the query face and an archive face near it."""

    query: str  # the query file as given (a folder's files: the folder as given / the file's path in it)
    query_face: int  # the face's index in the query photo (the job's face_index)
    rank: int  # 1 = nearest; faces added by ``identity`` follow the k nearest
    distance: float  # Euclidean, in the embedder's space (dlib: same person < ~0.5)
    face_id: str
    identity_id: str | None
    source_uri: str
    box: list[float]  # x1, y1, x2, y2 in the image's pixels

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class QueryFace:
    query: str
    face_index: int
    box: list[float]
    embedding: np.ndarray
    models: tuple[str, str, str]  # detector, embedder, align


class FaceIndex:
    """The archive's faces of one model group, searchable by embedding (see the module text)."""

    def __init__(
        self,
        faces: pa.Table,
        models: tuple[str, str, str],
        output: Output,
        device: str | None = None,
        cells: ivf_store.StoredCells | None = None,
    ):
        """``cells``: the cluster stage's kept cells for these faces (used beyond :data:`EXACT_MAX`)."""
        self.x = np.ascontiguousarray(schema.embedding_matrix(faces.column("embedding")), np.float32)
        self.faces, self.models, self.output = faces.drop_columns(["embedding"]), models, output
        self.backend = _Exact(self.x, device) if len(self.x) <= EXACT_MAX else _IVF(self.x, cells)
        #: how the index was made: exact, ivf on the kept cells, or ivf trained at open
        self.kind = "exact" if len(self.x) <= EXACT_MAX else "ivf, kept cells" if cells else "ivf, trained at open"
        ids = faces.column("identity_id").to_pylist()
        self.by_identity: dict[str, list[int]] = {}
        for i, ident in enumerate(ids):
            if ident is not None:
                self.by_identity.setdefault(ident, []).append(i)

    @classmethod
    def open(cls, output: str | Output, device: str | None = None) -> "FaceIndex":
        """The index of ``output``'s faces (a UserError when it has none)."""
        out = as_output(output)
        ds = out.dataset("faces")
        cols = [
            "face_id",
            "image_id",
            "face_index",
            "embedding",
            "detector",
            "embedder",
            "align",
            "x1",
            "y1",
            "x2",
            "y2",
        ]
        faces = ds.to_table(columns=cols, filter=pc.field("embedding").is_valid()) if ds is not None else None
        if faces is None or faces.num_rows == 0:
            raise UserError(f"{out.uri} holds no embedded faces to search (run `facepipe run` first)")
        keys = ["detector", "embedder", "align"]
        counts = faces.select(keys).group_by(keys).aggregate([([], "count_all")]).to_pylist()
        top = max(counts, key=lambda r: (r["count_all"], [str(r[k]) for k in keys]))  # ties: by name
        models = tuple(top[k] for k in keys)
        keep = pc.and_(
            pc.and_(pc.equal(faces["detector"], models[0]), pc.equal(faces["embedder"], models[1])),
            pc.equal(faces["align"], models[2]),
        )
        faces = _with_images_and_identities(faces.filter(keep).sort_by("face_id"), out)
        faces = _without_erased(faces, load_tombstones(out))
        cells = None
        if faces.num_rows > EXACT_MAX:  # the cluster stage's cells, when it kept them for this embedder
            want = ivf_store.Trained(models[1], 0, 0, 0, 0, 0, 0, 0)
            cells = ivf_store.load(out, faces.column("face_id").to_pylist(), want, keys=("embedder",))
        return cls(faces, models, out, device, cells)

    def __len__(self) -> int:
        return self.faces.num_rows

    def nearest(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) query embeddings -> (Q, k) row indices and distances, nearest first."""
        return self.backend.nearest(np.ascontiguousarray(q, np.float32), min(k, len(self)))

    def search(self, queries: list[QueryFace], k: int = 20, identity: bool = False) -> list[Hit]:
        """The ``k`` nearest faces of each query face (and with ``identity`` every other face of
        the identities they belong to, nearest first), as :class:`Hit` lines."""
        for qf in queries:
            if qf.models != self.models:
                raise UserError(
                    f"{qf.query}: its faces were cut and embedded by {' / '.join(qf.models)}, the archive's by "
                    f"{' / '.join(self.models)}: their distances would mean nothing"
                )
        if not queries or not len(self):
            return []
        q = np.stack([qf.embedding for qf in queries])
        idx, dist = self.nearest(q, k)
        hits = []
        for qi, qf in enumerate(queries):
            rows = [int(r) for r in idx[qi] if r >= 0]  # the inverted file may find fewer than k
            if identity:
                ids = {self.faces["identity_id"][int(r)].as_py() for r in rows} - {None}
                extra = sorted({m for i in ids for m in self.by_identity[i]} - set(rows))
                if extra:
                    xe = self.x[extra]
                    de = np.linalg.norm(xe - qf.embedding[None], axis=1)
                    rows += [extra[j] for j in np.argsort(de, kind="stable")]
            d = np.linalg.norm(self.x[rows] - qf.embedding[None], axis=1)
            hits += [self._hit(qf, rank + 1, float(d[rank]), int(r)) for rank, r in enumerate(rows)]
        return hits

    def _hit(self, qf: QueryFace, rank: int, distance: float, row: int) -> Hit:
        f = {c: self.faces[c][row].as_py() for c in ("face_id", "identity_id", "source_uri", "x1", "y1", "x2", "y2")}
        box = [round(f[c], 1) for c in ("x1", "y1", "x2", "y2")]
        return Hit(
            qf.query, qf.face_index, rank, round(distance, 4), f["face_id"], f["identity_id"], f["source_uri"], box
        )


def _without_erased(faces: pa.Table, t: Tombstones) -> pa.Table:
    """``faces`` (with their ``source_uri``) less those the tombstones ``t`` name, by face, image or prefix."""
    if not t:
        return faces
    ids, uris = faces.column("image_id").to_pylist(), faces.column("source_uri").to_pylist()
    gone = t.erased_images(ids, [u or "" for u in uris])
    gone |= np.isin(np.asarray(faces.column("face_id").to_pylist(), object), list(t.face_ids))
    return faces.filter(pa.array(~gone))


def _with_images_and_identities(faces: pa.Table, out: Output) -> pa.Table:
    """``faces`` with its image's ``source_uri`` and its identity id (null: none in the snapshot)."""
    images = out.dataset("images").to_table(columns=["image_id", "source_uri"])
    at = pc.index_in(faces["image_id"], value_set=images["image_id"].combine_chunks())
    faces = faces.append_column("source_uri", images["source_uri"].take(at))
    ds = out.dataset("face_identity")
    if ds is None:
        return faces.append_column("identity_id", pa.nulls(faces.num_rows, pa.string()))
    ident = ds.to_table(columns=["face_id", "identity_id"])
    at = pc.index_in(faces["face_id"], value_set=ident["face_id"].combine_chunks())
    return faces.append_column("identity_id", ident["identity_id"].take(at))


class _Exact:
    """Exact nearest faces: a blocked matrix product on torch (recall 1.0)."""

    def __init__(self, x: np.ndarray, device: str | None = None) -> None:
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.x = torch.from_numpy(x).to(self.device)
        self.sq = (self.x * self.x).sum(1)

    def nearest(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        qt = torch.from_numpy(q).to(self.device)
        step = max(1, (1 << 26) // max(len(self.x), 1))  # distance blocks of at most ~256 MB
        idx, dist = np.zeros((len(q), k), np.int64), np.zeros((len(q), k), np.float32)
        for s in range(0, len(q), step):
            b = qt[s : s + step]
            d2 = ((b * b).sum(1)[:, None] + self.sq[None, :] - 2 * b @ self.x.T).clamp_min_(0)
            vals, nn = torch.topk(d2, k, dim=1, largest=False)
            idx[s : s + len(b)], dist[s : s + len(b)] = nn.cpu().numpy(), vals.sqrt().cpu().numpy()
        return idx, dist


class _IVF:
    """FAISS's inverted file (``IndexIVFFlat``), the query's nearest :data:`PROBE_SHARE` of its
    cells scanned: the cluster stage's cells kept in the output (``storage.ivf_store``; only the
    faces they lack are assigned), else sqrt(N) cells trained now on a seeded sample. Measured
    recall@10 against exact search in bench/RESULTS.md ("Search by face")."""

    def __init__(self, x: np.ndarray, cells: ivf_store.StoredCells | None = None) -> None:
        import faiss
        from faiss.contrib.ivf_tools import add_preassigned

        nlist = int(np.sqrt(len(x))) if cells is None else len(cells.centroids)
        quantizer = faiss.IndexFlatL2(x.shape[1])
        self.index = faiss.IndexIVFFlat(quantizer, x.shape[1], nlist)
        if cells is None:
            sample = x[np.sort(np.random.default_rng(0).choice(len(x), min(len(x), 64 * nlist), replace=False))]
            self.index.train(sample)
            self.index.add(x)
        else:
            quantizer.add(cells.centroids)
            self.index.is_trained = True
            own = cells.probes[:, 0].astype(np.int64)
            if len(cells.missing):
                own[cells.missing] = quantizer.search(x[cells.missing], 1)[1][:, 0]
            add_preassigned(self.index, x, own)
        self.index.nprobe = max(1, int(nlist * PROBE_SHARE))
        self.quantizer = quantizer  # FAISS holds it by pointer: keep it alive
        self.scan: CellScan | None = None

    def nearest(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(q) >= BATCH:  # the same candidates compared cell by cell: BLAS speed
            self.scan = self.scan or CellScan(self.index)
            idx, d2 = self.scan.nearest(q, k)
        else:
            d2, idx = self.index.search(q, k)
        return idx.astype(np.int64), np.sqrt(np.maximum(d2, 0)).astype(np.float32)
