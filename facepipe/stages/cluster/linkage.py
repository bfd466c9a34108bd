"""The second pass of clustering: identities merged on the evidence of all their faces.

The first pass (Chinese Whispers on the links shorter than the cut) must keep the cut tight
enough that two look-alikes are not linked by one close pair of faces; a person photographed
over years then ends up in several identities, each a tight group (bench/RESULTS.md,
"Identities at thousands of real people": in the wild, recall 0.66 at the cut precision needs
among 1,758 parliamentarians). Two such identities are still much closer *as groups* than two
people are: the root-mean-square distance over every pair of their faces
(:func:`rms_linkage`, from each identity's count, sum and sum of squares: exact, without the
pairs) is small for one person and stays near the typical distance of two people for two.

:func:`merge_by_linkage` merges, in rounds, each identity with its nearest by that linkage when
they are each other's nearest, the linkage is under the pass's cut, one of the two has at least
``min_faces`` faces that are not copies of each other (:func:`looks`: the evidence of several
photos, not one close pair -- two single faces are never merged here, nor a face and ten copies
of one photo) and no image holds a face of each (two faces of one photo are two people).
The candidates are the identity pairs the neighbour graph links under the cut -- a pair whose
RMS distance is under it has a face pair under it -- so the pass costs what the graph costs.
Everything depends on the labels and the embeddings only, so it keeps the first pass's
independence of the input order.
"""

from __future__ import annotations

import numpy as np

from facepipe.stages.cluster.arrays import CHUNK, unique

#: an identity needs this many faces to merge in the second pass
MIN_FACES = 3


def _roots(parent: np.ndarray, a: np.ndarray) -> np.ndarray:
    while True:
        up = parent[a]
        if np.array_equal(up, a):
            return a
        a = up


def _pairs(a: np.ndarray, b: np.ndarray, span: int) -> np.ndarray:
    """Unique unordered pairs as keys lo * span + hi, self pairs dropped."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return unique(lo[lo != hi] * span + hi[lo != hi])


def image_conflicts(labels: np.ndarray, image_ids: np.ndarray | None, span: int) -> np.ndarray:
    """Keys (``_pairs``) of the label pairs that hold a face of one image each."""
    ok = labels >= 0
    if image_ids is None or not ok.any():
        return np.zeros(0, np.int64)
    _, img = np.unique(np.asarray(image_ids)[ok], return_inverse=True)
    pairs = np.unique(np.c_[img, labels[ok]], axis=0)  # (image, label), sorted by image
    starts = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])
    sizes = np.diff(np.r_[starts, len(pairs)])
    keys = [np.zeros(0, np.int64)]
    for s, m in zip(starts[sizes > 1], sizes[sizes > 1]):  # images of several identities: few
        a, b = np.triu_indices(m, 1)
        keys.append(_pairs(pairs[s + a, 1], pairs[s + b, 1], span))
    return unique(np.concatenate(keys))


def rms_linkage(n: np.ndarray, s: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square distance over every face pair of identities ``a`` and ``b`` (arrays),
    from per-identity counts ``n``, sums ``s`` (L, D) and sums of squared norms ``q``:
    mean |xi - xj|^2 = q_a / n_a + q_b / n_b - 2 mean_a . mean_b."""
    ma, mb = s[a] / n[a, None], s[b] / n[b, None]
    return np.sqrt(np.maximum(q[a] / n[a] + q[b] / n[b] - 2 * np.einsum("ij,ij->i", ma, mb), 0.0))


def looks(xf: np.ndarray, starts: np.ndarray, radius: float, cap: int) -> np.ndarray:
    """Per group of the rows ``xf`` (groups start at ``starts``, rows in order within each):
    how many of its faces lie at least ``radius`` from each other, taken greedily in order,
    counted up to ``cap``. Copies of one photo (resized, re-encoded, cropped) are one look."""
    g = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(xf)]))
    picked = [starts]  # per group, the rows taken so far (-1: none)
    count = np.ones(len(starts), np.int64)
    for _ in range(cap - 1):
        far = np.ones(len(xf), bool)
        for p in picked:
            for c in range(0, len(xf), CHUNK):  # in chunks: no (faces, D) temporaries
                pg = p[g[c : c + CHUNK]]
                near = np.linalg.norm(xf[c : c + CHUNK] - xf[np.maximum(pg, 0)], axis=1) < radius
                far[c : c + CHUNK] &= (pg < 0) | ~near
        rows = np.flatnonzero(far)
        nxt = np.full(len(starts), -1)
        first = np.r_[True, g[rows][1:] != g[rows][:-1]] if len(rows) else np.zeros(0, bool)
        nxt[g[rows[first]]] = rows[first]
        count += nxt >= 0
        picked.append(nxt)
    return count


def _stats(
    x: np.ndarray, faces: np.ndarray, code: np.ndarray, distinct: float, min_faces: int
) -> tuple[np.ndarray, ...]:
    """Per identity code 0..L-1 (each present) of the rows ``faces`` of ``x``: faces, sum, sum of
    squared norms (float64) and looks (up to ``min_faces``), the faces taken in their order."""
    by = np.argsort(code, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(code[by]) != 0])
    xf = np.empty((len(by), x.shape[1]), np.float64)
    for c in range(0, len(by), CHUNK):  # gathered chunk by chunk: no float32 copy beside it
        xf[c : c + CHUNK] = x[faces[by[c : c + CHUNK]]]
    n = np.diff(np.r_[starts, len(by)]).astype(np.float64)
    s = np.add.reduceat(xf, starts, axis=0)
    q = np.add.reduceat(np.einsum("ij,ij->i", xf, xf), starts)
    return n, s, q, looks(xf, starts, distinct, min_faces).astype(np.float64)


def _mutual_nearest(a: np.ndarray, b: np.ndarray, d: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (a[i], b[i]) at distance d[i] whose ends are each other's nearest (ties: the
    smaller partner)."""
    ends, other = np.r_[a, b], np.r_[b, a]
    order = np.lexsort((other, np.r_[d, d], ends))
    first = order[np.r_[True, ends[order][1:] != ends[order][:-1]]]
    best = np.full(span, -1)
    best[ends[first]] = other[first]
    mutual = (best[a] == b) & (best[b] == a)
    return a[mutual], b[mutual]


def _between(labels: np.ndarray, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labels at both ends of the links that join two identities (a few in a hundred of the
    links: taken :data:`CHUNK` * 16 at a time, no label pair of every link)."""
    la, lb = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in range(0, len(src), CHUNK * 16):
        a, b = labels[src[c : c + CHUNK * 16]], labels[dst[c : c + CHUNK * 16]]
        ok = (a >= 0) & (b >= 0) & (a != b)
        la.append(a[ok])
        lb.append(b[ok])
    return np.concatenate(la), np.concatenate(lb)


def merge_by_linkage(
    x: np.ndarray,
    labels: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    cut: float,
    image_ids: np.ndarray | None = None,
    distinct: float = 0.0,
    min_faces: int = MIN_FACES,
) -> np.ndarray:
    """``labels`` (N,) with the identities the second pass merges (see the module text); the
    candidates are the graph's links ``src -> dst`` (face rows) already under ``cut``. An
    identity counts its faces at least ``distinct`` apart (:func:`looks`): ten copies of one
    photo are the evidence of one photo, not ten. A merged identity takes the smaller label of
    the two and the looks of both; -1 (unassigned) never moves."""
    labels = np.asarray(labels, np.int64)
    la, lb = _between(labels, src, dst)
    involved = unique(np.r_[la, lb])  # the identities a candidate names: stats of those only
    span = len(involved)
    if not span:
        return labels
    cand = _pairs(np.searchsorted(involved, la), np.searchsorted(involved, lb), span)
    faces = np.flatnonzero(np.isin(labels, involved))
    code = np.searchsorted(involved, labels[faces])
    n, s, q, seen = _stats(x, faces, code, distinct, min_faces)
    image_ids = None if image_ids is None else np.asarray(image_ids)[faces]
    conflicts = image_conflicts(code, image_ids, span)
    parent = np.arange(span)
    while True:  # all the candidates each round: a merged identity may come nearer to another
        a, b = cand // span, cand % span
        keep = ~np.isin(cand, conflicts) & (np.maximum(seen[a], seen[b]) >= min_faces)
        a, b = a[keep], b[keep]
        d = rms_linkage(n, s, q, a, b)
        a, b, d = a[d < cut], b[d < cut], d[d < cut]
        if not len(a):
            break
        ma, mb = _mutual_nearest(a, b, d, span)
        parent[mb] = ma
        n[ma] += n[mb]
        s[ma] += s[mb]
        q[ma] += q[mb]
        seen[ma] += seen[mb]
        root = _roots(parent, np.arange(span))
        conflicts = _pairs(root[conflicts // span], root[conflicts % span], span)
        cand = _pairs(root[cand // span], root[cand % span], span)
    out = labels.copy()
    out[faces] = involved[_roots(parent, np.arange(span))[code]]
    return out
