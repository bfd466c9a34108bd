"""The first cut raised where the archive's own pairs allow: a false-discovery rate.

The law's cut (:func:`facepipe.stages.cluster.threshold.auto_threshold`) spends a fixed budget
of chance links per face, whatever the archive holds. That cannot serve both an archive of many
people photographed once or twice (2,069 portraits of 1,758 parliamentarians: precision needs
<= 0.40) and one of few people photographed often (185 faces of 28 people in the wild: F needs
~0.5). What differs between them is how many of the pairs near a cut are one person -- which the
archive shows: the wild set has 708 pairs under 0.50 where the law expects 3.9 of two people,
the portraits 99 under 0.39 where it expects 5.

So, once the k-NN graph is built, the cut is raised (never lowered) to the largest ``c`` on a
0.005 grid, up to the law's upper bound, under which every step keeps the false-discovery rate
(Benjamini-Hochberg's: the different-person pairs the law expects among all N(N-1)/2 pairs
under ``c``, over the pairs the graph holds under ``c``) at or under :data:`FDR`. The graph's
pairs are an undercount of all pairs under ``c`` (only each face's k nearest), so the rate is
never below the true one. Pairs closer than half the law's cut are left out of both counts:
copies of one photo (re-encodings, crops, thumbnails; the second pass's "distinct looks"
radius) say nothing about how crowded the archive is near the cut.

Measured (bench/RESULTS.md, "The first cut raised by the archive's own pairs";
``bench/accuracy/link_fdr.py``): the wild set's cut 0.445 -> 0.515, BCubed F 0.849 -> 0.938
(dlib's Chinese Whispers: 0.918), precision 1.000; the portraits' stays 0.391; the synthetic
10^5 and 10^6 sets are already at the bound (precision >= 0.9999 there); the project's own set
0.460 -> 0.510, one face merged (precision 0.993). An archive that mixes few people photographed
often with many look-alikes keeps the tighter cut: one cut cannot serve both parts.
"""

from __future__ import annotations

import dataclasses
from statistics import NormalDist

import numpy as np

from facepipe.stages.cluster.arrays import CHUNK
from facepipe.stages.cluster.threshold import AUTO, BOUNDS, LinkThreshold

#: the false-discovery rate the first cut may be raised to (``--cluster-fdr``; 0: the law's cut)
FDR = 0.01
#: the grid the raised cut moves on
STEP = 0.005


def graph_pairs(idx: np.ndarray, dist: np.ndarray, below: float) -> np.ndarray:
    """The sorted distances under ``below`` of the k-NN graph ``(idx, dist)`` (row i: face i's
    neighbours, -1 none), each unordered pair once; read :data:`CHUNK` rows at a time (only the
    links under ``below`` are held: at 10^7 faces every link's row number alone is 1.6 GB)."""
    n, keys, found = len(idx), [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for s in range(0, n, CHUNK):
        r, c = np.nonzero((dist[s : s + CHUNK] < below) & (idx[s : s + CHUNK] >= 0))
        a, b = r.astype(np.int64) + s, idx[s : s + CHUNK][r, c].astype(np.int64)
        keys.append((np.minimum(a, b) * n + np.maximum(a, b))[a != b])
        found.append(dist[s : s + CHUNK][r, c][a != b])
    _, first = np.unique(np.concatenate(keys), return_index=True)
    return np.sort(np.concatenate(found)[first])


def raise_by_fdr(
    link: LinkThreshold, idx: np.ndarray, dist: np.ndarray, q: float = FDR, upper: float = BOUNDS[1]
) -> LinkThreshold:
    """``link`` with its value raised as the module text says (``law``: the law's cut), or
    ``link`` itself: a cut given as a number, chosen without the law (few faces), already
    raised, at ``upper``, or where no step up keeps the rate."""
    if q <= 0 or link.how != AUTO or link.mu is None or link.sigma is None or link.law is not None:
        return link
    n, floor = len(idx), link.value / 2
    grid = np.round(np.arange(np.ceil(link.value / STEP - 1e-9) * STEP, upper + 1e-9, STEP), 4)
    if not len(grid) or n < 2:
        return link
    d = graph_pairs(idx, dist, float(grid[-1]))
    law, pairs = NormalDist(link.mu, link.sigma), n * (n - 1) / 2
    cut = link.value
    for c, seen in zip(grid, np.searchsorted(d, grid) - np.searchsorted(d, floor)):
        if pairs * (law.cdf(c) - law.cdf(floor)) > q * max(int(seen), 1):
            break
        cut = float(c)
    return dataclasses.replace(link, value=cut, law=link.value) if cut > link.value else link
