"""Cluster stage: every face of the archive -> identities whose ids stay put night after night.

Two modes over the same kNN graph (:mod:`facepipe.stages.cluster.graph`) and Chinese Whispers
(:mod:`facepipe.stages.cluster.methods`):

- **incremental** (the nightly default, once a snapshot exists): only the faces the last snapshot
  has not placed -- tonight's, plus the earlier ones left unassigned -- are looked at. They and
  every identity one of them comes within ``threshold`` of form the *region*; Chinese Whispers
  runs there warm-started from the known identities (new faces start alone), while identities
  next to the region lend their labels but do not move. New faces join the identity their
  neighbours vote for, or form new identities; an identity outside the region is untouched, and
  one inside changes only when new faces pull two of them together (a merge) or apart (a split).
  Work grows with tonight's faces and the identities they touch, not with the archive; beyond
  the exact backend's size the faces of those identities are looked at through their neighbour
  lists kept in the output (:mod:`facepipe.stages.cluster.kept`), not searched again.
- **full** (``--full``, the first night, and methods other than Chinese Whispers): the whole
  archive from scratch.

A full run chooses the first cut from the archive (:mod:`facepipe.stages.cluster.threshold`,
raised by :mod:`facepipe.stages.cluster.fdr`). Either way a second pass
(:mod:`facepipe.stages.cluster.linkage`) merges identities close as groups -- one person split
over photos years apart -- under a cut from the same law (:func:`threshold.linkage_cut`), both
cuts kept with the snapshot; an incremental night runs it on its region and what that comes near.

Then the human corrections (:mod:`facepipe.stages.cluster.corrections`) are applied; then
:func:`name_clusters` gives each cluster the previous id it overlaps most (greatest shared faces
first, each old id once), else ``id-`` + 16 hex of BLAKE2b over its smallest face id, and
:func:`identity_events` compares the two assignments: an identity whose faces went mostly into
another is a **merge**, one that kept its id but lost a sizeable part to a new identity is a
**split**. :func:`run_cluster` reads ``OUT/faces`` (one embedder), publishes ``identity_events``
(this run's rows), then the ``identities`` and ``face_identity`` snapshots (staging protocol).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np

from facepipe.flags import flag, non_negative_int, unit_float
from facepipe.stages import write as writer
from facepipe.stages.cluster import constraints, corrections
from facepipe.stages.cluster.by_component import propagator
from facepipe.stages.cluster.constraints import (
    Permuted,
    Reordered,
    cannot_link,
    canonical_order,
    drop_small,
    split_same_image,
)
from facepipe.stages.cluster.fdr import FDR, raise_by_fdr
from facepipe.stages.cluster.graph import IndexConfig, NeighbourIndex, build_index
from facepipe.stages.cluster.identities import MIN_FACE_WIDTH, flagged_faces, identity_tables, load_faces
from facepipe.stages.cluster.incremental import IncrementalResult, cluster_incremental  # noqa: F401 -- public here too
from facepipe.stages.cluster.kept import neighbour_index
from facepipe.stages.cluster.linkage import MIN_FACES, merge_by_linkage
from facepipe.stages.cluster.methods import (
    chinese_whispers,
    mutual_density,
    threshold_components,
    threshold_edges,
)
from facepipe.stages.cluster.naming import events_table, identity_events, name_clusters, read_snapshot
from facepipe.stages.cluster.phases import Phases
from facepipe.stages.cluster.stats import kept_centroids
from facepipe.stages.cluster.threshold import (
    AUTO,
    LINKAGE_BOUND,
    LinkThreshold,
    attach,
    linkage_cut,
    resolve,
    stored,
    threshold_setting,
)
from facepipe.storage.output import Output, as_output

log = logging.getLogger(__name__)

METHODS = ("chinese_whispers", "mutual_density", "components")


@dataclass(frozen=True)
class ClusterConfig:
    """enabled: run as the last stage of ``facepipe run``. method / k: chosen on real labelled
    faces, precision first (bench/accuracy/cluster_real.py, bench/RESULTS.md "Identities on real
    faces"): Chinese Whispers on a 20-NN graph. threshold: the link distance, ``auto`` (chosen
    from the archive, ``facepipe.stages.cluster.threshold``: one fixed cut merged look-alikes
    among 1,758 parliamentarians at 0.45 and split people in the wild, bench/RESULTS.md
    "Identities at thousands of real people") or a number; fdr: an auto cut is raised where the archive's
    own pairs near it are mostly one person (:mod:`facepipe.stages.cluster.fdr`). Either way the faces are
    clustered in :func:`canonical_order` and two faces of one image are never one identity. min_faces:
    smaller groups stay unassigned (and are looked at again each night). seed: the propagation order. full:
    re-cluster the whole archive instead of placing the faces the last snapshot has not. split_share: a
    split is recorded when a new identity takes at least this share (and 2 faces) of an old one. reach:
    neighbours of each new face looked at to find the identities it touches (more than k: an old face can
    count a new one among its k nearest while the new one has k closer faces). index: the kNN backend.
    second_pass: after the first pass, merge identities whose faces are close as groups
    (:mod:`facepipe.stages.cluster.linkage`; its cut from the same law, :func:`linkage_cut`).
    include_outliers: cluster the faces ``face_outliers`` flags too; by default they are left out
    (``face_identity.status = 'outlier'``), so a false detection never joins or bridges identities.
    min_face: faces narrower than this (pixels of the image) are left out too (status
    ``too_small``): dlib's embeddings of 30 px faces put different people 0.42 apart (bench/RESULTS.md)."""

    enabled: bool = flag(True, "--no-cluster", "skip the identity-clustering stage", action="store_false")
    method: str = flag(
        "chinese_whispers",
        "--cluster-method",
        "clustering of the kNN graph (see bench/RESULTS.md)",
        choices=("chinese_whispers", "mutual_density", "components"),
    )
    threshold: float | str = flag(
        AUTO,
        "--cluster-threshold",
        "embedding distance that links two faces, or 'auto': chosen from the archive's own distances when it is "
        "clustered in full and kept with the snapshot (facepipe.stages.cluster.threshold)",
        type=threshold_setting,
    )
    fdr: float = flag(
        FDR,
        "--cluster-fdr",
        "an auto cut is raised while the archive's own pairs under it keep this false-discovery rate "
        "(facepipe.stages.cluster.fdr); 0: the law's cut",
        type=unit_float,
    )
    k: int = 20
    min_faces: int = 1
    seed: int = 0
    full: bool = False
    split_share: float = 0.25
    reach: int = 50
    index: IndexConfig = field(default_factory=IndexConfig)
    min_face: int = flag(
        MIN_FACE_WIDTH,
        "--cluster-min-face",
        "faces narrower than this many pixels are not clustered",
        type=non_negative_int,
    )
    second_pass: bool = flag(
        True,
        "--no-cluster-second-pass",
        "do not merge identities whose faces are close as groups (the second pass: facepipe.stages.cluster.linkage)",
        action="store_false",
    )
    propagation_tasks: int = flag(
        0,
        "--cluster-tasks",
        "propagate the identities in this many Ray tasks, whole connected components each "
        "(facepipe.stages.cluster.by_component); 1: on the driver; 0: a task per CPU of a multi-node Ray cluster "
        "the run started, for a graph of 1,000,000 faces or more",
        type=non_negative_int,
    )
    propagation_min: int = 1_000_000
    include_outliers: bool = flag(
        False,
        "--cluster-outliers",
        "cluster the faces the outlier stage flagged too (they are left out by default: junk joins no identity)",
        action="store_true",
    )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"cluster method {self.method!r} is not one of {METHODS}")
        if (self.threshold != AUTO and float(self.threshold) <= 0) or self.k < 1 or self.min_faces < 1:
            raise ValueError("cluster threshold must be > 0 or 'auto', k >= 1 and min_faces >= 1")


def cluster_embeddings(
    x: np.ndarray, cfg: ClusterConfig, index: NeighbourIndex | None = None, image_ids: np.ndarray | None = None
) -> np.ndarray:
    """Full clustering: (N, D) embeddings -> (N,) labels, -1 unassigned (:func:`cluster_full`)."""
    return cluster_full(x, cfg, index, image_ids)[0]


def cluster_full(
    x: np.ndarray,
    cfg: ClusterConfig,
    index: NeighbourIndex | None = None,
    image_ids: np.ndarray | None = None,
    link: LinkThreshold | None = None,
) -> tuple[np.ndarray, LinkThreshold]:
    """Full clustering: (N, D) embeddings -> ((N,) labels, -1 unassigned; the cuts used: the first,
    raised by the archive's pairs, and the second pass's). In :func:`canonical_order`: identities do
    not depend on the input order. ``image_ids`` (N,): faces of one image are never one identity.
    ``link``: the law's first cut, chosen by the caller (else from ``cfg``)."""
    n = len(x)
    link = link or resolve(cfg.threshold, x, None, full=True)
    if n == 0:
        return np.zeros(0, np.int64), link
    k = min(cfg.k, n - 1)
    if k == 0:
        return (np.zeros(n, np.int64) if cfg.min_faces <= 1 else np.full(n, -1, np.int64)), link
    order = canonical_order(x)
    xc, ids = Reordered(x, order), None if image_ids is None else np.asarray(image_ids)[order]
    idx, dist = Permuted(index or build_index(x, cfg.index), order).search(np.arange(n), k)
    link = raise_by_fdr(link, idx, dist, cfg.fdr)
    dist = cannot_link(idx, dist, np.arange(n), ids)
    if cfg.method == "chinese_whispers":
        lab = chinese_whispers(idx, dist, link.value, seed=cfg.seed, propagate=propagator(n, cfg))
    elif cfg.method == "mutual_density":
        lab = mutual_density(idx, dist, link.value, min_core=2, min_faces=1)
    else:
        lab = threshold_components(idx, dist, link.value)
    if cfg.second_pass:
        link = dataclasses.replace(link, linkage=linkage_cut(link, lab, MIN_FACES))
        edges = threshold_edges(idx, dist, link.linkage)
        lab = merge_by_linkage(xc, lab, *edges, link.linkage, ids, distinct=link.value / 2)
    lab = drop_small(split_same_image(lab, xc, ids, np.ones(n, bool), link.value), cfg.min_faces)
    labels = np.empty(n, np.int64)
    labels[order] = lab
    return labels, link


def _cluster(
    fs, code: np.ndarray, n_old: int, cfg: ClusterConfig, link: LinkThreshold, incremental: bool, index, ph: Phases
) -> tuple:
    """(labels, the cuts, faces placed, faces looked at) of one clustering."""
    if incremental:
        res = cluster_incremental(fs.x, code, n_old, cfg, index, fs.image_ids, link.linkage, ph)
        return res.labels, link, res.queried, res.region
    labels, link = cluster_full(fs.x, cfg, index, fs.image_ids, link)
    ph.done("clustered")
    return labels, link, len(labels), len(labels)


def _incremental(had: bool, cfg: ClusterConfig) -> bool:
    """Whether the night places the faces the snapshot it ``had`` lacks, or re-clusters all."""
    if had and not cfg.full and cfg.method != "chinese_whispers":
        log.info("method %s has no incremental mode: re-clustering all", cfg.method)
    return had and not cfg.full and cfg.method == "chinese_whispers"


def run_cluster(output: str | Output, dt: str, run_id: str, cfg: ClusterConfig) -> dict:
    """Place the archive's faces into identities (incremental unless ``cfg.full`` or there is no
    snapshot yet); publish events and the snapshot; return a summary (``phases``: each part's
    seconds, peak memory by its end). A snapshot a crashed writer left half published is finished
    first (``Output.recover``)."""
    t0, output, ph = time.perf_counter(), as_output(output), Phases()
    output.recover()
    fs = load_faces(output, {} if cfg.include_outliers else flagged_faces(output), cfg.min_face)
    if fs is None:
        return {"skipped": "no faces"}
    ph.done("faces read")
    snap = read_snapshot(output, fs.id_array())
    code, old_ids, incremental = snap.code, snap.old_ids, _incremental(snap.held, cfg)
    link = resolve(cfg.threshold, fs.x, stored(snap.schema), full=not incremental)
    cfg = dataclasses.replace(cfg, threshold=link.value)
    ph.done("snapshot read")
    radius = max(link.value, link.linkage or 0, LINKAGE_BOUND)  # no cut, first or second, links farther
    index, index_info, keep_index = neighbour_index(output, run_id, fs, cfg, radius, incremental, ph)
    ph.done("index opened")
    with closing(index or NeighbourIndex()):  # a sharded index's actors end with the night, however it ends
        labels, link, queried, region = _cluster(fs, code, len(old_ids), cfg, link, incremental, index, ph)
        fixed = constraints.apply_corrections(fs.face_ids, labels, fs.image_ids, corrections.load(output))
        labels = fixed.labels
        name = name_clusters(fs.face_ids, labels, code, old_ids)
        events = identity_events(code, old_ids, labels, name, cfg.split_share, fs.face_ids)
        events = corrections.annotate_events(events, fixed, name, code, old_ids, fs.face_ids, output)
        ph.done("named")
        kept = kept_centroids(output, labels, name, code, old_ids, snap.distance) if incremental else None
        identities, face_identity = identity_tables(fs, labels, name, run_id, fixed.given(), kept)
        tables = identities, attach(face_identity, link)
        ph.done("tables")
        files = writer.publish_identities(output, run_id, dt, snap.run, events_table(events, run_id), *tables)
        ph.done("published")
        index_info.update(keep_index(run_id))  # after the snapshot: the index is a cache of the faces
        ph.done("index kept")
    return {
        "mode": "incremental" if incremental else "full",
        "faces": len(fs.face_ids),
        "placed": queried,
        "region": region,
        **_counts(fs, labels, identities, name, old_ids, events, fixed),
        "threshold": dataclasses.asdict(link),
        "index": index_info,
        "files": files,
        "wall_s": round(time.perf_counter() - t0, 3),
        "phases": ph.parts,
        "config": dataclasses.asdict(cfg),
    }


def _counts(fs, labels: np.ndarray, identities, name: dict[int, str], old_ids: list[str], events: list, fixed) -> dict:
    """The summary's counts of a night's identities, faces left out, kept ids, events, corrections."""
    return {
        "identities": identities.num_rows,
        "unassigned": int((labels < 0).sum()),
        "outliers_left_out": sum(v == "outlier" for v in fs.left_out.values()),
        "too_small": sum(v == "too_small" for v in fs.left_out.values()),
        "reused_ids": len(set(name.values()) & set(old_ids)),
        "merges": sum(e["event"] == "merge" for e in events),
        "splits": sum(e["event"] == "split" for e in events),
        "corrections": fixed.summary(),
        "embedder": fs.embedder,
    }
