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
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from facepipe.cluster.graph import IndexConfig, NeighbourIndex, build_index
from facepipe.cluster.identities import events_table, flagged_faces, identity_tables, load_faces, load_previous
from facepipe.cluster.methods import (
    chinese_whispers,
    mutual_density,
    propagate_labels,
    symmetric_graph,
    threshold_components,
    threshold_edges,
)
from facepipe.cluster.naming import encode_previous, identity_events, name_clusters
from facepipe.flags import flag, positive_float
from facepipe.io import writer
from facepipe.io.output import Output, as_output

log = logging.getLogger(__name__)

METHODS = ("chinese_whispers", "mutual_density", "components")


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
    incremental night then misses what a full run links). index: the kNN backend.
    include_outliers: cluster the faces ``face_outliers`` flags too; by default they are left out
    (``face_identity.status = 'outlier'``), so a false detection never joins or bridges identities."""

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
    include_outliers: bool = flag(
        False,
        "--cluster-outliers",
        "cluster the faces the outlier stage flagged too (they are left out by default: junk joins no identity)",
        action="store_true",
    )

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


def run_cluster(output: str | Output, dt: str, run_id: str, cfg: ClusterConfig) -> dict:
    """Place the archive's faces into identities (incremental unless ``cfg.full`` or there is no
    snapshot yet); publish events and the snapshot; return a summary."""
    t0, output = time.perf_counter(), as_output(output)
    fs = load_faces(output, exclude=set() if cfg.include_outliers else flagged_faces(output))
    if fs is None:
        return {"skipped": "no faces"}
    previous, prev_run = load_previous(output)
    code, old_ids = encode_previous(fs.face_ids, previous)
    incremental = bool(previous) and not cfg.full and cfg.method == "chinese_whispers"
    if previous and not cfg.full and not incremental:
        log.info("cluster method %s has no incremental mode: re-clustering every face", cfg.method)
    t_index = -time.perf_counter()
    index = build_index(fs.x, cfg.index) if len(fs.x) > 1 else None
    t_index += time.perf_counter()
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
        "outliers_left_out": len(fs.left_out),
        "reused_ids": len(set(name.values()) & set(old_ids)),
        "merges": sum(e["event"] == "merge" for e in events),
        "splits": sum(e["event"] == "split" for e in events),
        "embedder": fs.embedder,
        "index": {"backend": index.backend if index else "none", "build_s": round(t_index, 3)},
        "files": sorted(staged_events + staged),
        "wall_s": round(time.perf_counter() - t0, 3),
        "config": dataclasses.asdict(cfg),
    }
