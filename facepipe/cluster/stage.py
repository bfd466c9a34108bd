"""Cluster stage: all faces of the archive -> identities (a full re-cluster; issue 5's first step).

:func:`cluster_embeddings` is the pure core (kNN graph -> method -> labels); :func:`assign_ids`
names clusters, reusing the previous snapshot's ids for the clusters that map onto them (greatest
overlap of faces, each old id used once), so a re-cluster does not renumber everyone; new
clusters get ``id-`` + 16 hex of BLAKE2b over their smallest face id (deterministic for the same
input and config). :func:`run_cluster` reads ``OUT/faces`` (one embedder), writes the
``identities`` and ``face_identity`` snapshots through the staging protocol, replacing the
previous snapshot. Still to come: the incremental nightly mode and merge/split events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import schema
from facepipe.cluster.graph import knn
from facepipe.cluster.methods import chinese_whispers, mutual_density, threshold_components
from facepipe.io import writer

log = logging.getLogger(__name__)

METHODS = ("chinese_whispers", "mutual_density", "components")


@dataclass(frozen=True)
class ClusterConfig:
    """enabled: run as the last stage of ``facepipe run``. method / threshold / k: see
    bench/RESULTS.md ("Identity clustering"): Chinese Whispers at 0.55 on a 10-NN graph merged
    fewest people without chaining. min_faces: smaller groups stay unassigned. seed: the
    propagation order of Chinese Whispers."""

    enabled: bool = True
    method: str = "chinese_whispers"
    threshold: float = 0.55
    k: int = 10
    min_faces: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"cluster method {self.method!r} is not one of {METHODS}")


def cluster_embeddings(x: np.ndarray, cfg: ClusterConfig) -> np.ndarray:
    """(N, D) embeddings -> (N,) labels, -1 unassigned."""
    if len(x) == 0:
        return np.zeros(0, np.int64)
    idx, dist = knn(x, cfg.k)
    if cfg.method == "chinese_whispers":
        return chinese_whispers(idx, dist, cfg.threshold, seed=cfg.seed, min_faces=cfg.min_faces)
    if cfg.method == "mutual_density":
        return mutual_density(idx, dist, cfg.threshold, min_core=2, min_faces=max(cfg.min_faces, 1))
    return threshold_components(idx, dist, cfg.threshold, cfg.min_faces)


def new_identity_id(face_ids: list[str]) -> str:
    return "id-" + hashlib.blake2b(min(face_ids).encode(), digest_size=8).hexdigest()


def assign_ids(face_ids: list[str], labels: np.ndarray, previous: dict[str, str]) -> list[str | None]:
    """Identity id per face: the old id with the greatest overlap for each cluster (largest
    clusters choose first; each old id once), else a new deterministic id."""
    members: dict[int, list[str]] = {}
    for f, lab in zip(face_ids, labels):
        if lab >= 0:
            members.setdefault(int(lab), []).append(f)
    taken: set[str] = set()
    name: dict[int, str] = {}
    for lab, faces in sorted(members.items(), key=lambda kv: (-len(kv[1]), min(kv[1]))):
        votes = Counter(previous[f] for f in faces if f in previous and previous[f] not in taken)
        if votes:
            old = min(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            taken.add(old)
            name[lab] = old
        else:
            name[lab] = new_identity_id(faces)
    return [name[int(lab)] if lab >= 0 else None for lab in labels]


def run_cluster(output: str, dt: str, run_id: str, cfg: ClusterConfig) -> dict:
    """Re-cluster every face of the archive; publish the identity snapshot; return a summary."""
    t0 = time.perf_counter()
    faces_ds = writer.table_dataset(output, "faces")
    if faces_ds is None:
        return {"skipped": "no faces table"}
    faces = faces_ds.to_table(columns=["face_id", "embedding", "embedder", "det_score", "dt"])
    if faces.num_rows == 0:
        return {"skipped": "no faces"}
    embedders = Counter(faces.column("embedder").to_pylist())
    embedder = max(embedders.items(), key=lambda kv: (kv[1], kv[0]))[0]
    if len(embedders) > 1:
        log.warning("faces of several embedders %s: clustering those of %s only", dict(embedders), embedder)
    faces = faces.filter(pc.equal(faces.column("embedder"), embedder))
    # the same face may sit in several partitions' runs only if re-extracted under another run id
    faces = faces.sort_by("face_id")
    n = faces.num_rows
    face_ids = faces.column("face_id").to_pylist()
    x = faces.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, -1)
    labels = cluster_embeddings(x, cfg)
    prev_ds = writer.table_dataset(output, "face_identity")
    previous: dict[str, str] = {}
    if prev_ds is not None:
        p = prev_ds.to_table(columns=["face_id", "identity_id"])
        previous = {f: i for f, i in zip(p.column("face_id").to_pylist(), p.column("identity_id").to_pylist()) if i is not None}
    ids = assign_ids(face_ids, labels, previous)
    # identities: centroid, representative (highest detection score), first/last seen
    score = faces.column("det_score").to_numpy(zero_copy_only=False)
    dts = faces.column("dt").to_pylist()
    groups: dict[str, list[int]] = {}
    for i, ident in enumerate(ids):
        if ident is not None:
            groups.setdefault(ident, []).append(i)
    dim = x.shape[1]
    rows, dist = [], np.full(n, np.nan, np.float32)
    for ident in sorted(groups):
        members = np.array(groups[ident])
        c = x[members].mean(0)
        dist[members] = np.linalg.norm(x[members] - c, axis=1)
        rows.append((ident, len(members), c, face_ids[members[np.argmax(score[members])]], min(dts[m] for m in members), max(dts[m] for m in members)))
    ident_schema = schema.identities_schema(dim)
    identities = pa.table(
        {
            "identity_id": pa.array([r[0] for r in rows], pa.string()),
            "n_faces": pa.array([r[1] for r in rows], pa.int64()),
            "centroid": pa.FixedSizeListArray.from_arrays(pa.array(np.array([r[2] for r in rows], np.float32).reshape(-1), pa.float32()), dim),
            "representative_face_id": pa.array([r[3] for r in rows], pa.string()),
            "first_seen_dt": pa.array([r[4] for r in rows], pa.string()).cast(pa.date32()),
            "last_seen_dt": pa.array([r[5] for r in rows], pa.string()).cast(pa.date32()),
            "embedder": pa.array([embedder] * len(rows), pa.string()),
            "run_id": pa.array([run_id] * len(rows), pa.string()),
        },
        schema=ident_schema,
    )
    face_identity = pa.table(
        {
            "face_id": pa.array(face_ids, pa.string()),
            "identity_id": pa.array(ids, pa.string()),
            "distance": pa.array(dist, pa.float32(), from_pandas=True),
            "run_id": pa.array([run_id] * n, pa.string()),
        },
        schema=schema.FACE_IDENTITY,
    )
    tables = ("identities", "face_identity")
    writer.clear_staging(output, run_id, tables)
    staged = writer.stage_tables({"identities": identities, "face_identity": face_identity}, output, run_id, dt)
    writer.publish(output, run_id, staged, tables=tables, snapshot=True)
    old_ids = set(previous.values())
    reused = sum(1 for r in rows if r[0] in old_ids)
    return {
        "faces": n,
        "identities": len(rows),
        "unassigned": int(sum(i is None for i in ids)),
        "reused_ids": reused,
        "embedder": embedder,
        "files": sorted(staged),
        "wall_s": round(time.perf_counter() - t0, 3),
        "config": dataclasses.asdict(cfg),
    }
