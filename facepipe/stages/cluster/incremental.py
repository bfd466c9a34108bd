"""Incremental nights: the faces the last snapshot has not placed (tonight's, and earlier ones
left unassigned) are placed among the known identities (:func:`cluster_incremental`; the mode is
described in :mod:`facepipe.stages.cluster.stage`). Work grows with tonight's faces and the
identities they touch, not with the archive."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from facepipe.stages.cluster.arrays import unique
from facepipe.stages.cluster.by_component import propagator
from facepipe.stages.cluster.constraints import (
    Permuted,
    Reordered,
    cannot_link,
    canonical_order,
    drop_small,
    split_same_image,
)
from facepipe.stages.cluster.graph import NeighbourIndex, build_index
from facepipe.stages.cluster.linkage import merge_by_linkage
from facepipe.stages.cluster.methods import symmetric_graph, threshold_edges
from facepipe.stages.cluster.phases import Phases
from facepipe.stages.cluster.threshold import resolve

if TYPE_CHECKING:
    from facepipe.stages.cluster.stage import ClusterConfig


@dataclass
class IncrementalResult:
    labels: np.ndarray  # old identity codes kept; new groups numbered from n_old; -1 unassigned
    queried: int  # faces not placed before (new + unassigned pool)
    region: int  # faces whose label could move tonight


def cluster_incremental(
    x: np.ndarray,
    prev_code: np.ndarray,
    n_old: int,
    cfg: ClusterConfig,
    index: NeighbourIndex | None = None,
    image_ids: np.ndarray | None = None,
    linkage: float | None = None,
    phases: Phases | None = None,
) -> IncrementalResult:
    """Place the faces with ``prev_code`` NEW or POOL among the identities ``0..n_old-1`` of the
    others (see the module text). Returns labels over all N faces. Runs in :func:`canonical_order`;
    ``image_ids`` (N,): a face placed tonight never joins an identity holding a face of its image.
    An ``auto`` threshold is the law's, chosen from ``x`` here (unraised: :mod:`.fdr` needs the
    full graph); :func:`run_cluster` passes the snapshot's,
    and its second pass's cut as ``linkage`` (None: the first cut); ``phases``: its parts timed."""
    cfg = dataclasses.replace(cfg, threshold=resolve(cfg.threshold, x, None, full=True).value)
    linkage = cfg.threshold if linkage is None else linkage
    order = canonical_order(x)
    ids = None if image_ids is None else np.asarray(image_ids)[order]
    index = Permuted(index or build_index(x, cfg.index), order)
    # number the old identities by where their faces come in that order, not by their id strings
    # (which follow input paths): label propagation breaks ties by the smallest number
    code = np.asarray(prev_code)[order]
    held = np.flatnonzero(code >= 0)
    first = np.full(n_old, len(code), np.int64)  # each one's first face in that order (none: past the last)
    np.minimum.at(first, code[held], held)
    rank = np.empty(n_old, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n_old)  # those with no face last, by code
    ranked = code.copy()
    ranked[code >= 0] = rank[code[code >= 0]]  # (a snapshot of no identity has no rank to look up)
    ph = phases or Phases()
    ph.done("ordered")
    res = _place(Reordered(x, order), ranked, n_old, cfg, index, ids, linkage, ph)
    lab, old = res.labels, (res.labels >= 0) & (res.labels < n_old)
    lab[old] = np.argsort(rank)[lab[old]]
    labels = np.empty(len(x), np.int64)
    labels[order] = lab
    return IncrementalResult(labels, res.queried, res.region)


def _place(
    x: Reordered,
    prev_code: np.ndarray,
    n_old: int,
    cfg: ClusterConfig,
    index: NeighbourIndex,
    ids: np.ndarray | None,
    linkage: float,
    ph: Phases,
) -> IncrementalResult:
    n = len(x)
    labels = np.where(prev_code >= 0, prev_code, -1).astype(np.int64)
    q = np.flatnonzero(prev_code < 0)
    k = min(cfg.k, n - 1)
    if len(q) == 0 or k == 0:
        if len(q):  # a lone face
            labels[q] = n_old + np.arange(len(q))
        return IncrementalResult(drop_small(labels, cfg.min_faces), len(q), len(q))
    reach = min(max(cfg.reach, k), n - 1)
    qi, qd = index.search(q, reach)
    qd = cannot_link(qi, qd, q, ids)
    near = (qd < cfg.threshold) & (qi >= 0)
    touched = unique(prev_code[qi[near]])
    ph.done("new faces searched")
    in_region = (prev_code < 0) | np.isin(prev_code, touched[touched >= 0])
    rest = np.flatnonzero(in_region & (prev_code >= 0))
    rows, nbr, dist = _region_lists(index, ids, n, (q, qi[:, :k], qd[:, :k]), rest)
    ph.done("region searched")
    src, dst = threshold_edges(nbr, dist, cfg.threshold)
    src = rows[src]
    nodes, at = _nodes(n, rows, dst)  # the region and the identities next to it; each face's node
    frozen = ~in_region[nodes]
    init = prev_code[nodes].astype(np.int64)
    fresh = init < 0
    init[fresh] = n_old + q.searchsorted(nodes[fresh])
    graph = symmetric_graph(len(nodes), at[src], at[dst])
    ph.done("region graph")
    lab = propagator(len(nodes), cfg)(*graph, init, frozen, seed=cfg.seed)
    labels[nodes[~frozen]] = lab[~frozen]
    ph.done("propagated")
    if cfg.second_pass:  # the region's identities against those its faces come near
        src, dst = threshold_edges(nbr, dist, linkage)
        labels = merge_by_linkage(x, labels, rows[src], dst, linkage, ids, distinct=cfg.threshold / 2)
        ph.done("second pass")
    labels = drop_small(split_same_image(labels, x, ids, prev_code < 0, cfg.threshold), cfg.min_faces)
    ph.done("same-image split")
    return IncrementalResult(labels, len(q), int(in_region.sum()))


def _region_lists(
    index: NeighbourIndex, ids: np.ndarray | None, n: int, tonight: tuple, rest: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, neighbours, distances) of the region of ``n`` faces: tonight's ``(q, qi, qd)``
    (faces, their lists) then the ``rest`` of the region, searched here as deep. The lists are held
    once, neighbours in int32: at 10^7 faces 0.5 GB through the region's graph, not 1.4 GB."""
    q, qi, qd = tonight
    k = qi.shape[1]
    ri, rd = index.search(rest, k) if len(rest) else (np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
    rd = cannot_link(ri, rd, rest, ids)
    nbr = np.concatenate([qi, ri], dtype=_small(n))
    del ri
    return np.r_[q, rest], nbr, np.vstack([qd, rd])


def _small(n: int) -> type:
    return np.int32 if n < 2**31 else np.int64


def _nodes(n: int, rows: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The faces among ``rows`` and ``dst`` (ascending) and each face's place among them (-1:
    none), by marks over the N faces: a sort or a binary search of the region's edges took 5 s
    of a 2 minutes night at 3x10^6 faces."""
    mark = np.zeros(n, bool)
    mark[rows], mark[dst] = True, True
    nodes = np.flatnonzero(mark)
    at = np.full(n, -1, _small(len(nodes)))
    at[nodes] = np.arange(len(nodes))
    return nodes, at
