"""Search the archive by face: *here is a photo -- where else is this person?*

``facepipe search --output OUT PHOTO_OR_DIR... [--k 20] [--identity] [--json]`` and the same in
Python (``facepipe.search(...)``, or :meth:`FaceIndex.open` to keep the index for many queries):

1. :meth:`FaceIndex.open` (:mod:`facepipe.tools.face_index`) reads the archive's faces of one
   model group, their images and identities, erased ones left out, and indexes them (exact up
   to 200,000 faces, FAISS's inverted file beyond); it lives in memory while it is open.
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

import logging

import numpy as np
import pyarrow as pa

from facepipe.storage.output import Output, as_output
from facepipe.tools.face_index import FaceIndex, Hit, QueryFace

__all__ = ["FaceIndex", "Hit", "QueryFace", "query_faces", "search", "cmd_search", "run_config_for"]

log = logging.getLogger(__name__)


def run_config_for(out: Output, models: tuple[str, str, str]):
    """The config of ``out``'s latest run whose detector and embedder made ``models`` (its
    manifest), else the defaults: the query goes through the same chain the archive's faces did
    (and where the defaults are not the archive's models, :meth:`FaceIndex.search` refuses)."""
    from facepipe.config import RunConfig, from_dict
    from facepipe.run.manifest import read_manifests

    runs = [m for m in read_manifests(out) if (m.get("detector"), m.get("embedder")) == models[:2] and m.get("config")]
    if not runs:
        return RunConfig()
    best = max(runs, key=lambda m: (m.get("finished_at", ""), m["run_id"]))
    return from_dict(RunConfig, best["config"] | {"encryption": None})


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
    return 0
