"""Cluster stage: every face of the archive -> identities whose ids stay put night after night.

Two modes over the same kNN graph (:mod:`facepipe.cluster.graph`) and Chinese Whispers
(:mod:`facepipe.cluster.methods`):

- **incremental** (the nightly default, once a snapshot exists): only the faces the last snapshot
  has not placed -- tonight's, plus the earlier ones left unassigned -- are looked at. They and
  every identity one of them comes within ``threshold`` of form the *region*; Chinese Whispers
  runs there warm-started from the known identities (new faces start alone), while identities
  next to the region lend their labels but do not move. New faces join the identity their
  neighbours vote for, or form new identities; an identity outside the region is untouched, and
  one inside changes only when new faces pull two of them together (a merge) or apart (a split).
  Work grows with tonight's faces and the identities they touch, not with the archive.
- **full** (``--full``, the first night, and methods other than Chinese Whispers): the whole
  archive from scratch.

Either way :func:`name_clusters` gives each cluster the previous id it overlaps most (greatest
shared faces first, each old id once), else ``id-`` + 16 hex of BLAKE2b over its smallest face id
(deterministic for the same input and config), and :func:`identity_events` compares the two
assignments: an identity whose faces went mostly into another is a **merge**, one that kept its id
but lost a sizeable part to a new identity is a **split**. :func:`run_cluster` reads
``OUT/faces`` (one embedder), publishes ``identity_events`` (this run's rows) and then the
``identities`` and ``face_identity`` snapshots through the staging protocol.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import schema
from facepipe.cluster.graph import IndexConfig, NeighbourIndex, build_index
from facepipe.cluster.methods import (
    chinese_whispers,
    mutual_density,
    propagate_labels,
    symmetric_graph,
    threshold_components,
    threshold_edges,
)
from facepipe.flags import flag, positive_float
from facepipe.io import writer
from facepipe.io.output import Output, as_output

log = logging.getLogger(__name__)

METHODS = ("chinese_whispers", "mutual_density", "components")
NEW, POOL = -2, -1  # previous codes of a face the snapshot has not seen / left unassigned


@dataclass(frozen=True)
class ClusterConfig:
    """enabled: run as the last stage of ``facepipe run``. method / threshold / k: see
    bench/RESULTS.md ("Identity clustering"): Chinese Whispers at 0.55 on a 10-NN graph merged
    fewest people without chaining. min_faces: smaller groups stay unassigned (and are looked at
    again each night). seed: the propagation order. full: re-cluster the whole archive instead
    of placing the faces the last snapshot has not. split_share: a split is recorded when a new
    identity takes at least this share (and 2 faces) of an old one. reach: how many neighbours of
    each new face are looked at to find the identities it touches (more than k, because an old
    face can count a new one among its k nearest while the new one has k closer faces: an
    incremental night then misses what a full run links). index: the kNN backend."""

    enabled: bool = flag(True, "--no-cluster", "skip the identity-clustering stage", action="store_false")
    method: str = flag(
        "chinese_whispers",
        "--cluster-method",
        "clustering of the kNN graph (see bench/RESULTS.md)",
        choices=("chinese_whispers", "mutual_density", "components"),
    )
    threshold: float = flag(0.55, "--cluster-threshold", "embedding distance that links two faces", type=positive_float)
    k: int = 10
    min_faces: int = 1
    seed: int = 0
    full: bool = False
    split_share: float = 0.25
    reach: int = 50
    index: IndexConfig = field(default_factory=IndexConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"cluster method {self.method!r} is not one of {METHODS}")
        if self.threshold <= 0 or self.k < 1 or self.min_faces < 1:
            raise ValueError("cluster threshold must be > 0, k >= 1 and min_faces >= 1")


def _drop_small(labels: np.ndarray, min_faces: int) -> np.ndarray:
    if min_faces <= 1:
        return labels
    ok = labels >= 0
    _, inv, counts = np.unique(labels[ok], return_inverse=True, return_counts=True)
    out = labels.copy()
    out[np.flatnonzero(ok)[counts[inv] < min_faces]] = -1
    return out


def cluster_embeddings(x: np.ndarray, cfg: ClusterConfig, index: NeighbourIndex | None = None) -> np.ndarray:
    """Full clustering: (N, D) embeddings -> (N,) labels, -1 unassigned."""
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64)
    k = min(cfg.k, n - 1)
    if k == 0:
        return np.zeros(n, np.int64) if cfg.min_faces <= 1 else np.full(n, -1, np.int64)
    idx, dist = (index or build_index(x, cfg.index)).search(np.arange(n), k)
    if cfg.method == "chinese_whispers":
        return chinese_whispers(idx, dist, cfg.threshold, seed=cfg.seed, min_faces=cfg.min_faces)
    if cfg.method == "mutual_density":
        return mutual_density(idx, dist, cfg.threshold, min_core=2, min_faces=cfg.min_faces)
    return threshold_components(idx, dist, cfg.threshold, cfg.min_faces)


@dataclass
class IncrementalResult:
    labels: np.ndarray  # old identity codes kept; new groups numbered from n_old; -1 unassigned
    queried: int  # faces not placed before (new + unassigned pool)
    region: int  # faces whose label could move tonight


def cluster_incremental(
    x: np.ndarray, prev_code: np.ndarray, n_old: int, cfg: ClusterConfig, index: NeighbourIndex | None = None
) -> IncrementalResult:
    """Place the faces with ``prev_code`` NEW or POOL among the identities ``0..n_old-1`` of the
    others (see the module text). Returns labels over all N faces."""
    n = len(x)
    labels = np.where(prev_code >= 0, prev_code, -1).astype(np.int64)
    q = np.flatnonzero(prev_code < 0)
    k = min(cfg.k, n - 1)
    if len(q) == 0 or k == 0:
        if len(q):  # a lone face
            labels[q] = n_old + np.arange(len(q))
        return IncrementalResult(_drop_small(labels, cfg.min_faces), len(q), len(q))
    index = index or build_index(x, cfg.index)
    reach = min(max(cfg.reach, k), n - 1)
    qi, qd = index.search(q, reach)
    near = (qd < cfg.threshold) & (qi >= 0)
    touched = np.unique(prev_code[qi[near]])
    qi, qd = qi[:, :k], qd[:, :k]
    in_region = prev_code < 0
    in_region |= np.isin(prev_code, touched[touched >= 0])
    rest = np.flatnonzero(in_region & (prev_code >= 0))
    ri, rd = index.search(rest, k) if len(rest) else (np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
    rows, nbr, dist = np.r_[q, rest], np.vstack([qi, ri]), np.vstack([qd, rd])
    src, dst = threshold_edges(nbr, dist, cfg.threshold)
    src = rows[src]
    nodes = np.unique(np.r_[rows, dst])  # the region and the identities next to it
    frozen = ~in_region[nodes]
    init = prev_code[nodes].astype(np.int64)
    fresh = init < 0
    init[fresh] = n_old + q.searchsorted(nodes[fresh])
    graph = symmetric_graph(len(nodes), np.searchsorted(nodes, src), np.searchsorted(nodes, dst))
    lab = propagate_labels(*graph, init, frozen, seed=cfg.seed)
    labels[nodes[~frozen]] = lab[~frozen]
    return IncrementalResult(_drop_small(labels, cfg.min_faces), len(q), int(in_region.sum()))


def new_identity_id(face_ids: list[str]) -> str:
    return "id-" + hashlib.blake2b(min(face_ids).encode(), digest_size=8).hexdigest()


def name_clusters(face_ids: list[str], labels: np.ndarray, prev_code: np.ndarray, old_ids: list[str]) -> dict[int, str]:
    """label -> identity id. (cluster, old id) pairs are taken by decreasing shared faces (ties:
    the cluster with the smaller first face, then the smaller id), each cluster and each old id
    once; a cluster left over gets a new deterministic id."""
    ok = labels >= 0
    ulab, first = np.unique(labels[ok], return_index=True)
    first_face = {int(lab): face_ids[i] for lab, i in zip(ulab, np.flatnonzero(ok)[first])} if len(ulab) else {}
    both = ok & (prev_code >= 0)
    n_old = max(len(old_ids), 1)
    key, count = np.unique(labels[both] * n_old + prev_code[both], return_counts=True)
    pairs = sorted(
        zip((-count).tolist(), (key // n_old).tolist(), (key % n_old).tolist()),
        key=lambda p: (p[0], first_face[p[1]], old_ids[p[2]]),
    )
    name: dict[int, str] = {}
    taken: set[int] = set()
    for _, lab, old in pairs:
        if lab not in name and old not in taken:
            name[lab] = old_ids[old]
            taken.add(old)
    # a new id must not be an old one: an old identity's id hashes its smallest face, which may
    # now sit in another cluster than the one that kept the id
    used = set(old_ids) | set(name.values())
    for lab in sorted(set(first_face) - set(name), key=first_face.__getitem__):
        ident, salt = new_identity_id([first_face[lab]]), 0  # faces are sorted: the first is the smallest
        while ident in used:
            salt += 1
            ident = new_identity_id([f"{first_face[lab]}#{salt}"])
        name[lab] = ident
        used.add(ident)
    return name


def encode_previous(face_ids: list[str], previous: dict[str, str | None]) -> tuple[np.ndarray, list[str]]:
    """Previous assignment as codes per face (NEW, POOL or an index into the sorted old ids)."""
    old_ids = sorted({i for i in previous.values() if i is not None})
    pos = {o: j for j, o in enumerate(old_ids)}
    code = np.array(
        [NEW if f not in previous else (POOL if previous[f] is None else pos[previous[f]]) for f in face_ids], np.int64
    )
    return code, old_ids


def assign_ids(face_ids: list[str], labels: np.ndarray, previous: dict[str, str | None]) -> list[str | None]:
    """Identity id per face (``face_ids`` sorted) for cluster ``labels``, reusing ``previous``
    ids by overlap (:func:`name_clusters`)."""
    code, old_ids = encode_previous(face_ids, previous)
    name = name_clusters(face_ids, np.asarray(labels), code, old_ids)
    return [name[int(lab)] if lab >= 0 else None for lab in labels]


def identity_events(
    prev_code: np.ndarray, old_ids: list[str], labels: np.ndarray, name: dict[int, str], split_share: float = 0.25
) -> list[dict]:
    """Merges and splits between the previous assignment and this one (faces present in both).

    merge: an old id no cluster kept, whose faces went mostly (> half) into one identity ->
    ``old_ids`` [that identity if it is old, and every id merged into it], ``new_ids`` [it].
    split: an old id that was kept, of which a *new* identity took at least ``split_share`` of
    the faces and at least 2 -> ``old_ids`` [it], ``new_ids`` [it, the new ones]."""
    alive = set(name.values())
    old_set = set(old_ids)
    seen = prev_code >= 0
    total = np.bincount(prev_code[seen], minlength=len(old_ids))
    moved = seen & (labels >= 0)
    n_lab = int(labels.max()) + 1 if len(labels) else 1
    key, count = np.unique(prev_code[moved] * n_lab + labels[moved], return_counts=True)
    parts: dict[int, list[tuple[int, str]]] = {}
    for kk, c in zip(key.tolist(), count.tolist()):
        parts.setdefault(kk // n_lab, []).append((c, name[kk % n_lab]))
    merged_into: dict[str, list[tuple[str, int]]] = {}
    events = []
    for o, ps in sorted(parts.items()):
        oid = old_ids[o]
        if oid not in alive:
            c, dest = max(ps, key=lambda p: (p[0], p[1]))
            if 2 * c > total[o]:
                merged_into.setdefault(dest, []).append((oid, c))
        else:
            need = max(2, math.ceil(split_share * total[o]))
            new = sorted((d, c) for c, d in ps if d != oid and d not in old_set and c >= need)
            if new:
                events.append(
                    {
                        "event": "split",
                        "old_ids": [oid],
                        "new_ids": [oid] + [d for d, _ in new],
                        "n_faces": sum(c for _, c in new),
                    }
                )
    for dest, olds in merged_into.items():
        events.append(
            {
                "event": "merge",
                "old_ids": sorted([o for o, _ in olds] + ([dest] if dest in old_set else [])),
                "new_ids": [dest],
                "n_faces": sum(c for _, c in olds),
            }
        )
    return sorted(events, key=lambda e: (e["event"], e["old_ids"], e["new_ids"]))


@dataclass
class FaceSet:
    face_ids: list[str]  # sorted
    x: np.ndarray  # (N, D) float32
    det_score: np.ndarray
    dt: np.ndarray  # datetime64[D]
    embedder: str


def load_faces(output: str | Output) -> FaceSet | None:
    faces_ds = as_output(output).dataset("faces")
    if faces_ds is None:
        return None
    faces = faces_ds.to_table(columns=["face_id", "embedding", "embedder", "det_score", "dt"])
    if faces.num_rows == 0:
        return None
    embedders = Counter(faces.column("embedder").to_pylist())
    embedder = max(embedders.items(), key=lambda kv: (kv[1], kv[0]))[0]
    if len(embedders) > 1:
        log.warning("faces of several embedders %s: clustering those of %s only", dict(embedders), embedder)
        faces = faces.filter(pc.equal(faces.column("embedder"), embedder))
    faces = faces.sort_by("face_id")
    x = schema.embedding_matrix(faces.column("embedding"))
    return FaceSet(
        face_ids=faces.column("face_id").to_pylist(),
        x=x,
        det_score=faces.column("det_score").to_numpy(zero_copy_only=False),
        dt=np.array(faces.column("dt").to_pylist(), "datetime64[D]"),
        embedder=embedder,
    )


def load_previous(output: str | Output) -> tuple[dict[str, str | None], str | None]:
    """The published face_identity snapshot as face_id -> identity_id (None: unassigned), and
    the run id that wrote it."""
    ds = as_output(output).dataset("face_identity")
    if ds is None:
        return {}, None
    t = ds.to_table(columns=["face_id", "identity_id", "run_id"])
    runs = set(t.column("run_id").unique().to_pylist())
    return dict(zip(t.column("face_id").to_pylist(), t.column("identity_id").to_pylist())), (
        runs.pop() if len(runs) == 1 else None
    )


@dataclass
class IdentityStats:
    """Per identity (M of them, by ascending label): what the ``identities`` table holds."""

    labels: np.ndarray  # (M,) the distinct labels >= 0
    counts: np.ndarray  # (M,) int64 faces
    centroid: np.ndarray  # (M, D) float32 mean embedding (summed in float64)
    representative: np.ndarray  # (M,) row of the highest det_score; ties: the earliest row
    first_day: np.ndarray  # (M,) int64 days since 1970-01-01 of its first face's dt
    last_day: np.ndarray  # (M,) int64, of its last
    assigned: np.ndarray  # (K,) rows with a label >= 0
    inverse: np.ndarray  # (K,) each assigned row's identity, an index into ``labels``


def identity_stats(labels: np.ndarray, x: np.ndarray, det_score: np.ndarray, days: np.ndarray) -> IdentityStats:
    """The one implementation of an identity's statistics, used by clustering and by erasure.

    labels (N,) int, -1 = unassigned; x (N, D) embeddings; det_score (N,); days (N,) int64 days
    since 1970-01-01. Rows come sorted by face id, so ties pick the smallest face id.
    """
    ok = np.flatnonzero(labels >= 0)
    ulab, inv, counts = np.unique(labels[ok], return_inverse=True, return_counts=True)
    m, dim = len(ulab), x.shape[1]
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    cent = np.zeros((m, dim), np.float32)
    if m:
        by_label = np.argsort(inv, kind="stable")
        cent = (np.add.reduceat(x[ok][by_label].astype(np.float64), starts) / counts[:, None]).astype(np.float32)
    best = np.lexsort((-det_score[ok], inv))
    rep = ok[best[starts]] if m else np.zeros(0, np.int64)
    day = days[ok].astype(np.int64)
    first, last = np.full(m, np.iinfo(np.int64).max), np.full(m, np.iinfo(np.int64).min)
    np.minimum.at(first, inv, day)
    np.maximum.at(last, inv, day)
    return IdentityStats(ulab, counts.astype(np.int64), cent, rep, first, last, ok, inv)


def identity_tables(fs: FaceSet, labels: np.ndarray, name: dict[int, str], run_id: str) -> tuple[pa.Table, pa.Table]:
    """(identities, face_identity) snapshot tables: centroid, distance to it, representative
    (highest detection score), first/last seen."""
    n, dim = fs.x.shape
    st = identity_stats(labels, fs.x, fs.det_score, fs.dt)
    ok, inv, counts, cent, rep, first, last = (
        st.assigned,
        st.inverse,
        st.counts,
        st.centroid,
        st.representative,
        st.first_day,
        st.last_day,
    )
    m = len(st.labels)
    dist = np.full(n, np.nan, np.float32)
    dist[ok] = np.linalg.norm(fs.x[ok] - cent[inv], axis=1)
    ids = [name[int(lab)] for lab in st.labels]
    order = sorted(range(m), key=ids.__getitem__)
    identities = pa.table(
        {
            "identity_id": pa.array([ids[i] for i in order], pa.string()),
            "n_faces": pa.array(counts[order], pa.int64()),
            "centroid": pa.FixedSizeListArray.from_arrays(pa.array(cent[order].reshape(-1), pa.float32()), dim),
            "representative_face_id": pa.array([fs.face_ids[rep[i]] for i in order], pa.string()),
            "first_seen_dt": pa.array(first[order].astype("datetime64[D]"), pa.date32()),
            "last_seen_dt": pa.array(last[order].astype("datetime64[D]"), pa.date32()),
            "embedder": pa.array([fs.embedder] * m, pa.string()),
            "run_id": pa.array([run_id] * m, pa.string()),
        },
        schema=schema.identities_schema(dim),
    )
    per_face = np.full(n, None, object)
    per_face[ok] = np.array(ids, object)[inv]
    face_identity = pa.table(
        {
            "face_id": pa.array(fs.face_ids, pa.string()),
            "identity_id": pa.array(per_face, pa.string()),
            "distance": pa.array(dist, pa.float32(), from_pandas=True),
            "run_id": pa.array([run_id] * n, pa.string()),
        },
        schema=schema.FACE_IDENTITY,
    )
    return identities, face_identity


def events_table(events: list[dict], run_id: str) -> pa.Table:
    return pa.Table.from_pylist([{**e, "run_id": run_id} for e in events], schema=schema.IDENTITY_EVENTS)


def run_cluster(output: str | Output, dt: str, run_id: str, cfg: ClusterConfig) -> dict:
    """Place the archive's faces into identities (incremental unless ``cfg.full`` or there is no
    snapshot yet); publish events and the snapshot; return a summary."""
    t0 = time.perf_counter()
    output = as_output(output)
    fs = load_faces(output)
    if fs is None:
        return {"skipped": "no faces"}
    previous, prev_run = load_previous(output)
    code, old_ids = encode_previous(fs.face_ids, previous)
    incremental = bool(previous) and not cfg.full and cfg.method == "chinese_whispers"
    if previous and not cfg.full and not incremental:
        log.info("cluster method %s has no incremental mode: re-clustering every face", cfg.method)
    t_index = time.perf_counter()
    index = build_index(fs.x, cfg.index) if len(fs.x) > 1 else None
    t_index = time.perf_counter() - t_index
    if incremental:
        res = cluster_incremental(fs.x, code, len(old_ids), cfg, index)
        labels, queried, region = res.labels, res.queried, res.region
    else:
        labels = cluster_embeddings(fs.x, cfg, index)
        queried = region = len(labels)
    name = name_clusters(fs.face_ids, labels, code, old_ids)
    events = identity_events(code, old_ids, labels, name, cfg.split_share)
    identities, face_identity = identity_tables(fs, labels, name, run_id)
    # events first, the snapshot last: a crash between them is repaired by the rerun, which finds
    # the old snapshot, recomputes the same events and replaces them. A rerun after the snapshot
    # landed sees no change and must not wipe the first attempt's events: it appends.
    output.clear_staging(run_id, ("identity_events", "identities", "face_identity"))
    staged_events = writer.stage_tables({"identity_events": events_table(events, run_id)}, output, run_id, dt)
    output.publish(run_id, staged_events, tables=("identity_events",), replace=prev_run != run_id)
    snap = ("identities", "face_identity")
    staged = writer.stage_tables({"identities": identities, "face_identity": face_identity}, output, run_id, dt)
    output.publish(run_id, staged, tables=snap, snapshot=True)
    return {
        "mode": "incremental" if incremental else "full",
        "faces": len(fs.face_ids),
        "placed": queried,
        "region": region,
        "identities": identities.num_rows,
        "unassigned": int((labels < 0).sum()),
        "reused_ids": len(set(name.values()) & set(old_ids)),
        "merges": sum(e["event"] == "merge" for e in events),
        "splits": sum(e["event"] == "split" for e in events),
        "embedder": fs.embedder,
        "index": {"backend": index.backend if index else "none", "build_s": round(t_index, 3)},
        "files": sorted(staged_events + staged),
        "wall_s": round(time.perf_counter() - t0, 3),
        "config": dataclasses.asdict(cfg),
    }
