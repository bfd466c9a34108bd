"""Clustering a kNN graph into identities. Each method: ``(idx, dist, params) -> labels`` (N,)
int64, -1 = left unassigned; labels are numbered by first appearance, so equal inputs give equal
output.

- :func:`threshold_components`: connected components of the edges shorter than ``threshold``
  (what most tools do; chains through in-between faces).
- :func:`mutual_density`: DBSCAN-like on *mutual* neighbours: an edge counts only if each end is
  among the other's k nearest and it is shorter than ``threshold``; points with at least
  ``min_core`` such edges are cores; cores connect through mutual edges, other points join their
  nearest core; groups smaller than ``min_faces`` stay unassigned. Bridges of in-between faces
  have few mutual neighbours, so they do not chain two people together.
- :func:`chinese_whispers`: dlib's label propagation on the thresholded graph (seeded order,
  vectorised in :func:`propagate_labels`, which also warm-starts from known identities).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from facepipe.stages.cluster.arrays import CHUNK, unique


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the edges (a[i], b[i]): the smallest node of each node's
    component. Vectorised union-find (:func:`hook`) until no edge joins two roots: a few rounds
    for any graph."""
    parent = np.arange(n)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    hooked = True
    while hooked:
        parent, hooked = hook(parent, a, b)
    return parent


def hook(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, bool]:
    """One round of union-find over the edges (a[i], b[i]): each root hooked under the smallest
    root it touches, then pointers jumped to the roots. Returns the parents and whether any
    edge still joined two roots."""
    ra, rb = parent[a], parent[b]
    lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
    differ = lo != hi
    if not differ.any():
        return parent, False
    np.minimum.at(parent, hi[differ], lo[differ])
    while not np.array_equal(jumped := parent[parent], parent):
        parent = jumped
    return parent, True


def _relabel(roots: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Number groups 0, 1, ... by first appearance; ``keep`` False -> -1."""
    roots = np.asarray(roots, np.int64)
    keep = np.ones(len(roots), bool) if keep is None else np.asarray(keep, bool)
    out = np.full(len(roots), -1, np.int64)
    if keep.any():
        uniq, first, inverse = np.unique(roots[keep], return_index=True, return_inverse=True)
        rank = np.empty(len(uniq), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
        out[keep] = rank[inverse]
    return out


def threshold_edges(idx: np.ndarray, dist: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """kNN rows -> (src, dst) of the neighbour links shorter than ``threshold`` (missing: -1, skipped),
    row by row; int32 below 2^31 rows (the edges are held through the first night's peak: at 10^7
    faces int64 pairs, with the buffer ``np.nonzero`` returns them in, took 3 GB more), found
    :data:`CHUNK` rows at a time."""
    small = np.int32 if len(idx) < 2**31 else np.int64
    src, dst = [np.zeros(0, small)], [np.zeros(0, small)]
    for s in range(0, len(idx), CHUNK):
        r, c = np.nonzero((dist[s : s + CHUNK] < threshold) & (idx[s : s + CHUNK] >= 0))
        dst.append(idx[s : s + CHUNK][r, c].astype(small))
        src.append((r + s).astype(small))
    return np.concatenate(src), np.concatenate(dst)


def threshold_components(idx: np.ndarray, dist: np.ndarray, threshold: float, min_faces: int = 1) -> np.ndarray:
    roots = components(len(idx), *threshold_edges(idx, dist, threshold))
    sizes = np.bincount(roots, minlength=len(idx))
    return _relabel(roots, sizes[roots] >= min_faces)


def mutual_edges(idx: np.ndarray, dist: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) pairs, a < b, with b in a's neighbours and a in b's, both shorter than threshold."""
    n = len(idx)
    src, dst = (e.astype(np.int64) for e in threshold_edges(idx, dist, threshold))
    fwd = src * n + dst
    both = np.isin(fwd, dst * n + src)
    key = unique(np.minimum(src, dst)[both] * n + np.maximum(src, dst)[both])
    return key // n, key % n


def mutual_density(
    idx: np.ndarray, dist: np.ndarray, threshold: float, min_core: int = 2, min_faces: int = 2
) -> np.ndarray:
    n = len(idx)
    a, b = mutual_edges(idx, dist, threshold)
    degree = np.bincount(np.r_[a, b], minlength=n)
    core = degree >= min_core
    both = core[a] & core[b]
    roots = components(n, a[both], b[both])
    # a non-core point joins the group of its nearest core neighbour within the threshold
    near = (dist < threshold) & (idx >= 0) & core[np.maximum(idx, 0)]
    attach = ~core & near.any(1)
    roots[attach] = roots[idx[attach, near[attach].argmax(1)]]
    assigned = core | attach
    sizes = np.bincount(roots[assigned], minlength=n)
    return _relabel(roots, assigned & (sizes[roots] >= min_faces))


def symmetric_graph(
    n: int, src: np.ndarray, dst: np.ndarray, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Undirected graph as CSR ``(indptr, indices, weights)``: each unordered pair once (an edge
    found from both ends is still one edge), self-loops dropped. A node's neighbours come in
    two runs: those above it, then those below it, each ascending. ``weights`` None: every edge
    weighs 1 (no array: 16 bytes an edge). ``indices`` are int32 below 2^31 nodes; the
    temporaries are let go as soon as used (the graph is the first pass's peak of memory)."""
    small = np.int32 if n < 2**31 else np.int64
    ok = src != dst
    key = np.minimum(src, dst)[ok].astype(np.int64) * n + np.maximum(src, dst)[ok]
    if weight is None:  # no weights to carry: a plain sort, not an argsort
        key, w = unique(key), None
    else:
        key, first = np.unique(key, return_index=True)
        w = np.asarray(weight, np.float64)[ok][first]
    a, b = (key // n).astype(small), (key % n).astype(small)  # by a, then b
    del key
    up, down = np.bincount(a, minlength=n), np.bincount(b, minlength=n)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(up + down, out=indptr[1:])
    e = len(a)
    cols = np.empty(2 * e, small)
    ww = None if w is None else np.empty(2 * e)
    at = (indptr[:-1] - (np.cumsum(up) - up))[a]  # a's neighbours above it, in order
    at += np.arange(e)
    cols[at] = b
    if w is not None:
        ww[at] = w
    del at
    if w is None:  # b's neighbours below it, by a: the pairs sorted by (b, a), a plain sort (3x a stable argsort)
        by_b = np.sort(b.astype(np.int64) * n + a)
        b_sorted, a_by_b = (by_b // n).astype(small), (by_b % n).astype(small)
    else:
        by_b = np.argsort(b, kind="stable")
        b_sorted, a_by_b = b[by_b], a[by_b]
    below = (indptr[:-1] + up - (np.cumsum(down) - down))[b_sorted]
    below += np.arange(e)
    cols[below] = a_by_b
    if w is not None:
        ww[below] = w[by_b]
    return indptr, cols, ww


def propagate_labels(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray | None,
    labels: np.ndarray,
    frozen: np.ndarray | None = None,
    iterations: int = 20,
    seed: int = 0,
    chunks: int = 64,
) -> np.ndarray:
    """Chinese Whispers label propagation: every node, in a seeded random order, takes the label
    with the largest total edge weight among its neighbours (ties: the smallest label; ``weights``
    None: every edge weighs 1). Nodes are updated in ``chunks`` groups per pass, each group at
    once from the labels of the groups before it -- nearly the one-at-a-time order of the
    original, vectorised. ``labels``: the start (each node its own for a fresh clustering; the
    known identities for a warm start); ``frozen`` nodes keep theirs and only lend it. Returns
    the final labels (values taken from ``labels``). The same labels, one connected component at
    a time on Ray tasks: :mod:`facepipe.stages.cluster.by_component`."""
    movable = movable_nodes(indptr, frozen)
    size = max(1, -(-len(movable) // chunks))
    orders = (movable[p] for p in pass_orders(len(movable), iterations, seed))
    passes = ((o[s : s + size] for s in range(0, len(o), size)) for o in orders)
    return propagate_passes(indptr, indices, weights, labels, passes)


def pass_orders(m: int, iterations: int, seed: int) -> Iterator[np.ndarray]:
    """The update order of each pass: a seeded permutation of the ``m`` movable nodes' positions
    (the one draw :func:`propagate_labels` and its per-component form both use)."""
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        yield rng.permutation(m)


def movable_nodes(indptr: np.ndarray, frozen: np.ndarray | None) -> np.ndarray:
    """The nodes propagation updates: those with an edge, not frozen."""
    deg = np.diff(indptr)
    return np.flatnonzero((deg > 0) if frozen is None else (deg > 0) & ~frozen)


def propagate_passes(
    indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray | None, labels: np.ndarray, passes
) -> np.ndarray:
    """:func:`propagate_labels` over the given ``passes``, each an iterable of node groups in
    update order; stops after a pass that changes no label (the labels are then a fixed point:
    no order of updates changes them)."""
    label = np.asarray(labels, np.int64).copy()
    if not len(label):
        return label
    deg, span = np.diff(indptr), int(label.max()) + 1
    for groups in passes:
        changed = 0
        for nodes in groups:
            changed += update_group(indptr, indices, weights, deg, span, label, nodes)
        if not changed:
            break
    return label


def update_group(
    indptr, indices, weights, deg, span: int, label: np.ndarray, nodes: np.ndarray, names: np.ndarray | None = None
) -> int:
    """One group's nodes take their neighbours' heaviest label at once; returns how many changed.
    ``nodes``: rows of the graph; ``names``: each row's node in ``label`` and ``indices`` (None:
    the row itself; a part of a component holds only its nodes' rows, :mod:`.rounds`)."""
    d = deg[nodes]
    owner = np.repeat(np.arange(len(nodes)), d)
    pos = np.repeat(indptr[nodes] - np.cumsum(d) + d, d) + np.arange(int(d.sum()))
    key = owner * span + label[indices[pos]]
    srt = np.argsort(key, kind="stable")
    key = key[srt]
    bound = np.r_[0, np.flatnonzero(np.diff(key)) + 1]
    ukey = key[bound]
    # the weight of each label among the neighbours (unweighted: how many carry it)
    score = np.diff(np.r_[bound, len(key)]) if weights is None else np.add.reduceat(weights[pos][srt], bound)
    uown, ulab = ukey // span, ukey % span
    pick = np.lexsort((ulab, -score, uown))
    first = pick[np.r_[True, uown[pick][1:] != uown[pick][:-1]]]
    who, best = (nodes if names is None else names[nodes])[uown[first]], ulab[first]
    changed = int((label[who] != best).sum())
    label[who] = best
    return changed


def chinese_whispers(
    idx: np.ndarray,
    dist: np.ndarray,
    threshold: float,
    iterations: int = 20,
    seed: int = 0,
    min_faces: int = 1,
    propagate: Callable[..., np.ndarray] | None = None,
) -> np.ndarray:
    """``propagate``: :func:`propagate_labels` or a stand-in giving the same labels (its
    components on Ray tasks: :func:`facepipe.stages.cluster.by_component.propagator`)."""
    n = len(idx)
    src, dst = threshold_edges(idx, dist, threshold)
    graph = symmetric_graph(n, src, dst)
    del src, dst
    label = (propagate or propagate_labels)(*graph, np.arange(n), iterations=iterations, seed=seed)
    sizes = np.bincount(label, minlength=n)
    return _relabel(label, sizes[label] >= min_faces)
