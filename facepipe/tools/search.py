"""Search the archive by face: *here is a photo -- where else is this person?*

``facepipe search --output OUT PHOTO_OR_DIR... [--k 20] [--identity] [--json]`` and the same in
Python (``facepipe.search(...)``, or :meth:`FaceIndex.open` to keep the index for many queries):

1. :meth:`FaceIndex.open` reads the archive's faces (``faces``: the largest group of one
   detector, embedder and align method -- the models a query must be embedded with), their
   images' ``source_uri`` and the ``face_identity`` snapshot's identity ids, leaving out what an
   erasure's tombstones name. Nearest faces are exact (a blocked matrix product on torch:
   recall 1.0 by construction); the index lives in memory while it is open (bench/RESULTS.md,
   "Search by face", has the open time and the latencies).
2. :func:`query_faces` runs the query photos through the run's own extract chain
   (``facepipe.run.steps``: decode, detect, align, embed), with the config of the output's latest
   run of those models (its manifest), so the query faces are cut and embedded exactly as the
   archive's were; the models' registry ids must match the index's, else the search is refused
   (:class:`facepipe.errors.UserError`).
3. :meth:`FaceIndex.search` returns, per query face, the ``k`` nearest archive faces
   (:class:`Hit`: distance, face id, identity id, image, box); ``identity=True`` adds every other
   face of each matched identity.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import schema
from facepipe.errors import UserError
from facepipe.storage.output import RUNS, Output, as_output
from facepipe.storage.tombstones import load_tombstones

log = logging.getLogger(__name__)


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

    def __init__(self, faces: pa.Table, models: tuple[str, str, str], output: Output, device: str | None = None):
        import torch

        self.faces, self.models, self.output = faces, models, output
        x = schema.embedding_matrix(faces.column("embedding"))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.x = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        self.sq = (self.x * self.x).sum(1)
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
        groups = Counter(zip(*(faces.column(c).to_pylist() for c in ("detector", "embedder", "align"))))
        models = max(groups.items(), key=lambda kv: (kv[1], kv[0]))[0]
        keep = pc.and_(
            pc.and_(pc.equal(faces["detector"], models[0]), pc.equal(faces["embedder"], models[1])),
            pc.equal(faces["align"], models[2]),
        )
        faces = _without_erased(faces.filter(keep), out).sort_by("face_id")
        return cls(_with_images_and_identities(faces, out), models, out, device)

    def __len__(self) -> int:
        return self.faces.num_rows

    def nearest(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) query embeddings -> (Q, k) row indices and distances, nearest first (exact)."""
        import torch

        k = min(k, len(self))
        qt = torch.from_numpy(np.ascontiguousarray(q, np.float32)).to(self.device)
        step = max(1, (1 << 26) // max(len(self), 1))  # distance blocks of at most ~256 MB
        idx, dist = np.zeros((len(q), k), np.int64), np.zeros((len(q), k), np.float32)
        for s in range(0, len(q), step):
            b = qt[s : s + step]
            d2 = ((b * b).sum(1)[:, None] + self.sq[None, :] - 2 * b @ self.x.T).clamp_min_(0)
            vals, nn = torch.topk(d2, k, dim=1, largest=False)
            idx[s : s + len(b)], dist[s : s + len(b)] = nn.cpu().numpy(), vals.sqrt().cpu().numpy()
        return idx, dist

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
            rows = list(idx[qi])
            if identity:
                ids = {self.faces["identity_id"][int(r)].as_py() for r in rows} - {None}
                extra = sorted({m for i in ids for m in self.by_identity[i]} - set(rows))
                if extra:
                    xe = self.x[extra].cpu().numpy()
                    de = np.linalg.norm(xe - qf.embedding[None], axis=1)
                    rows += [extra[j] for j in np.argsort(de, kind="stable")]
            d = np.linalg.norm(self.x[rows].cpu().numpy() - qf.embedding[None], axis=1)
            hits += [self._hit(qf, rank + 1, float(d[rank]), int(r)) for rank, r in enumerate(rows)]
        return hits

    def _hit(self, qf: QueryFace, rank: int, distance: float, row: int) -> Hit:
        f = {c: self.faces[c][row].as_py() for c in ("face_id", "identity_id", "source_uri", "x1", "y1", "x2", "y2")}
        box = [round(f[c], 1) for c in ("x1", "y1", "x2", "y2")]
        return Hit(
            qf.query, qf.face_index, rank, round(distance, 4), f["face_id"], f["identity_id"], f["source_uri"], box
        )


def _without_erased(faces: pa.Table, out: Output) -> pa.Table:
    t = load_tombstones(out)
    if not t:
        return faces
    gone = pc.or_(pc.is_in(faces["face_id"], pa.array(sorted(t.face_ids), pa.string())),
                  pc.is_in(faces["image_id"], pa.array(sorted(t.image_ids), pa.string())))  # fmt: skip
    return faces.filter(pc.invert(gone))


def _with_images_and_identities(faces: pa.Table, out: Output) -> pa.Table:
    """``faces`` with its image's ``source_uri`` (erased prefixes left out) and its identity id."""
    images = out.dataset("images").to_table(columns=["image_id", "source_uri"])
    at = pc.index_in(faces["image_id"], value_set=images["image_id"].combine_chunks())
    faces = faces.append_column("source_uri", images["source_uri"].take(at))
    t = load_tombstones(out)
    if t.source_prefixes:
        uris = faces.column("source_uri").to_pylist()
        faces = faces.filter(pa.array([not t.covers_uri(u or "") for u in uris]))
    ds = out.dataset("face_identity")
    if ds is None:
        return faces.append_column("identity_id", pa.nulls(faces.num_rows, pa.string()))
    ident = ds.to_table(columns=["face_id", "identity_id"])
    at = pc.index_in(faces["face_id"], value_set=ident["face_id"].combine_chunks())
    return faces.append_column("identity_id", ident["identity_id"].take(at))


def run_config_for(out: Output, models: tuple[str, str, str]):
    """The config of ``out``'s latest run whose detector and embedder made ``models`` (its
    manifest), else the defaults: the query goes through the same chain the archive's faces did
    (and where the defaults are not the archive's models, :meth:`FaceIndex.search` refuses)."""
    from facepipe.config import RunConfig, from_dict
    from facepipe.run.manifest import RunManifest

    best = None
    for path in out.files(RUNS, suffix=".json"):
        try:
            m = RunManifest.from_json(json.loads(out.fs.open_input_stream(path).read()))
        except (ValueError, TypeError, KeyError):
            continue
        if (m.detector, m.embedder) == models[:2] and m.config and (best is None or m.finished_at > best.finished_at):
            best = m
    return RunConfig() if best is None else from_dict(RunConfig, best.config | {"encryption": None})


def query_faces(
    output: str | Output, photos: list[str], models: tuple[str, str, str] = ("", "", "")
) -> list[QueryFace]:
    """Every face of the query ``photos`` (files or folders, local or ``s3://``), cut and
    embedded by the chain of the output's run of ``models`` (:func:`run_config_for`)."""
    from facepipe.run.local_executor import apply_steps
    from facepipe.run.steps import extract_chain
    from facepipe.stages.read.sources import list_units, read_units
    from facepipe.storage import fs as fsio
    from facepipe.storage.tombstones import Tombstones

    out = as_output(output)
    chain = extract_chain(run_config_for(out, models), out, Tombstones())
    steps = [s for s in chain.steps if s.role != "write" and s.name != "drop_erased"]
    found = []
    for given in photos:
        units = list_units([given])
        root = fsio.to_uri(*fsio.resolve(given)).rstrip("/")
        names = {
            u.uri: given if u.uri == root else f"{given.rstrip('/')}/{u.uri[len(root) :].lstrip('/')}" for u in units
        }
        for t in apply_steps(steps, list(read_units(units, chain.read))):
            found += _faces_of(t, names)
    return found


def _faces_of(t: pa.Table, names: dict[str, str]) -> list[QueryFace]:
    """The faces of ``schema.EMBEDDED`` rows, named by the query they came from."""
    faces = []
    for r in t.select(
        [
            "source_uri",
            "status",
            "error",
            "n_faces",
            "boxes",
            "embeddings",
            "embedding_dim",
            "detector",
            "embedder",
            "align",
        ]
    ).to_pylist():
        query = names.get(r["source_uri"].split("#")[0], r["source_uri"])
        if r["status"] != "ok" or not r["n_faces"] or not r["embeddings"]:
            why = f"not searched: {r['status']}: {r['error']}" if r["status"] != "ok" else "no face found"
            log.warning("%s: %s", r["source_uri"] if "#" in r["source_uri"] else query, why)
            continue
        e = np.asarray(r["embeddings"], np.float32).reshape(r["n_faces"], r["embedding_dim"])
        b = np.asarray(r["boxes"], np.float32).reshape(-1, 4)
        faces += [
            QueryFace(query, i, b[i].round(1).tolist(), e[i], (r["detector"], r["embedder"], r["align"]))
            for i in range(len(e))
        ]
    return faces


def search(output: str | Output, photos: list[str], k: int = 20, identity: bool = False) -> list[Hit]:
    """``facepipe search`` in Python: the archive faces nearest each face of ``photos``."""
    index = FaceIndex.open(output)
    return index.search(query_faces(index.output, photos, index.models), k, identity)


def cmd_search(a) -> int:
    """``facepipe search``: a table on a terminal, one JSON object per line with ``--json``."""
    import sys

    index = FaceIndex.open(a.output)
    queries = query_faces(index.output, a.photos, index.models)
    hits = index.search(queries, a.k, a.identity)
    if a.json:
        for h in hits:
            print(h.to_json())
        return 0
    print(f"{len(queries)} query faces in {len(a.photos)} input(s); {len(index)} archive faces ({index.models[1]})")
    if not hits:
        return 0
    print(f"{'query':<32} {'face':>4} {'rank':>4} {'distance':>8}  {'identity':<20} {'image':<40} box")
    for h in hits:
        box = ",".join(f"{v:.0f}" for v in h.box)
        print(f"{h.query[-32:]:<32} {h.query_face:>4} {h.rank:>4} {h.distance:>8.4f}  {h.identity_id or '-':<20} "
              f"{h.source_uri[-40:]:<40} {box}")  # fmt: skip
    sys.stdout.flush()
    return 0
