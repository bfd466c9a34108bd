"""Each face's neighbour list, kept from night to night, in front of a neighbour index.

An incremental night looks again at every identity tonight's faces come near: at 10^6 faces in
the archive and 10^4 new, 306k faces whose k nearest were searched again every night -- 40 s of a
70 s night (bench/RESULTS.md, "The face index kept in the output"). Those neighbours change only
where tonight's faces come among them. So each face's list -- its ``K`` nearest under the
index's radius, as a search gave them, the face itself left out -- is kept
(:mod:`facepipe.storage.list_store`), and a night

1. searches afresh the faces the lists do not know yet (those not in the kept index: tonight's,
   and any a lost publish left out), ``reach`` deep;
2. puts each of them into the list of every listed face it found, where it is nearer than that
   face's farthest (a new face near an old one is found from the new one's side: the old face
   is among its ``reach`` nearest, ``reach`` > ``K``, the same reach the night already uses to
   find the identities it touches);
3. answers a search from the lists where it can, from the index otherwise (a face whose list is
   unknown or lost a neighbour that left the archive, or a search deeper than ``K``), and keeps
   those answers as lists too.

:class:`ListedIndex` does this in front of any :class:`NeighbourIndex`, in the stage's face rows;
what changed is written back after the night. The lists hold raw distances: the cannot-link of
two faces of one image is applied when they are used, as on a search's answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facepipe.stages.cluster.arrays import unique
from facepipe.stages.cluster.graph import NeighbourIndex


@dataclass
class Lists:
    """Neighbour lists of N faces, rows of the stage's faces: ``nbr`` (N, K) int32, -1 padded;
    ``dist`` (N, K) float32, increasing, inf padded; ``valid``: the row is its face's K nearest
    under the radius among all faces; ``changed``: it differs from the stored one."""

    nbr: np.ndarray
    dist: np.ndarray
    valid: np.ndarray
    changed: np.ndarray

    @classmethod
    def empty(cls, n: int, k: int) -> Lists:
        return cls(
            np.full((n, k), -1, np.int32), np.full((n, k), np.inf, np.float32), np.zeros(n, bool), np.zeros(n, bool)
        )

    @property
    def k(self) -> int:
        return self.nbr.shape[1]

    def record(self, rows: np.ndarray, idx: np.ndarray, dist: np.ndarray) -> None:
        """A fresh search's answer for ``rows`` (at least K deep) becomes their lists."""
        w = min(self.k, idx.shape[1])
        self.nbr[rows], self.dist[rows] = -1, np.inf
        self.nbr[rows, :w], self.dist[rows, :w] = idx[:, :w], dist[:, :w]
        self.valid[rows] = self.changed[rows] = True

    def insert(self, src: np.ndarray, idx: np.ndarray, dist: np.ndarray) -> int:
        """Each face ``src[i]`` into the lists of the valid faces ``idx[i]`` it found, at
        ``dist[i]``, where it is nearer than their farthest; returns the lists changed. A list
        takes its entries by (distance, face); a list one face comes into goes in place
        (:meth:`_shift_in`), the others are merged whole (:meth:`_merge`), with the same result."""
        o, s, d = idx.ravel(), np.repeat(src, idx.shape[1]), dist.ravel()
        ok = (o >= 0) & np.isfinite(d)
        o, s, d = o[ok], s[ok], d[ok]
        ok = self.valid[o] & (d < self.dist[o, -1]) & ~np.isin(o, src)  # the searched have fresh lists
        o, s, d = o[ok], s[ok], d[ok]
        if not len(o):
            return 0
        by = np.argsort(o, kind="stable")
        o, s, d = o[by], s[by], d[by]
        alone = np.r_[True, o[1:] != o[:-1]] & np.r_[o[1:] != o[:-1], True]  # the one face coming into its list
        held_d, held_s = self.dist[o[alone]], self.nbr[o[alone]]
        plain = ~(held_s == s[alone, None]).any(1)  # not there already (a lost publish's face: merged)
        plain &= ~((held_d[:, 1:] == held_d[:, :-1]) & np.isfinite(held_d[:, 1:])).any(1)  # no tie to re-sort
        one = np.flatnonzero(alone)[plain]
        self._shift_in(o[one], s[one], d[one])
        many = np.ones(len(o), bool)
        many[one] = False
        return len(one) + (self._merge(o[many], s[many], d[many]) if many.any() else 0)

    def _shift_in(self, rows: np.ndarray, s: np.ndarray, d: np.ndarray) -> None:
        """Face ``s[i]`` into the list of ``rows[i]`` (distinct rows, lists sorted, ``s`` not in
        them, nearer than their farthest) at its place by (distance, face); the farthest drops out."""
        held_d, held_s = self.dist[rows], self.nbr[rows]
        at = ((held_d < d[:, None]) | ((held_d == d[:, None]) & (held_s < s[:, None]) & (held_s >= 0))).sum(1)
        j = np.arange(self.k)[None]
        before = np.concatenate([held_s[:, :1], held_s[:, :-1]], 1), np.concatenate([held_d[:, :1], held_d[:, :-1]], 1)
        self.nbr[rows] = np.where(j < at[:, None], held_s, np.where(j == at[:, None], s[:, None], before[0]))
        self.dist[rows] = np.where(j < at[:, None], held_d, np.where(j == at[:, None], d[:, None], before[1]))
        self.changed[rows] = True

    def _merge(self, o: np.ndarray, s: np.ndarray, d: np.ndarray) -> int:
        """Entries (list ``o``, face ``s``, distance ``d``) merged with the lists they go into,
        each list's K nearest kept; returns the lists changed."""
        rows = unique(o)
        held = self.nbr[rows] >= 0
        o = np.r_[np.repeat(rows, held.sum(1)), o]
        s = np.r_[self.nbr[rows][held], s].astype(np.int64)
        d = np.r_[self.dist[rows][held], d]
        first = np.lexsort((d, s, o))
        dup = np.r_[False, (o[first][1:] == o[first][:-1]) & (s[first][1:] == s[first][:-1])]
        keep = first[~dup]  # a face found again (a lost publish's faces): once, at its least distance
        o, s, d = o[keep], s[keep], d[keep]
        by = np.lexsort((s, d, o))  # by face, then distance (ties: by row)
        o, s, d = o[by], s[by], d[by]
        rank = np.arange(len(o)) - np.searchsorted(o, o)
        top = rank < self.k
        before = self.nbr[rows].copy()
        self.nbr[rows], self.dist[rows] = -1, np.inf
        self.nbr[o[top], rank[top]], self.dist[o[top], rank[top]] = s[top], d[top]
        moved = rows[(self.nbr[rows] != before).any(1)]
        self.changed[moved] = True
        return len(moved)


class ListedIndex(NeighbourIndex):
    """``index`` answered from kept :class:`Lists` (see the module text). ``pending``: the faces
    the lists do not know; searched ``reach`` deep and put into the lists before the first
    answer."""

    def __init__(self, index: NeighbourIndex, lists: Lists, pending: np.ndarray, reach: int) -> None:
        self.index, self.lists, self.reach, self.backend = index, lists, reach, index.backend
        self.shards = index.shards
        self.pending = unique(np.asarray(pending, np.int64))
        self.wide_rows = np.zeros(0, np.int64)
        self.wide: tuple[np.ndarray, np.ndarray] | None = None
        self.inserted = self.searched = 0  # lists a new face went into; faces searched afresh

    def _prepare(self, k: int) -> None:
        rows, self.pending = self.pending, None
        if not len(rows):
            return
        idx, dist = self.index.search(rows, max(k, self.reach, self.lists.k))
        self.searched += len(rows)
        self.wide_rows, self.wide = rows, (idx, dist)
        self.lists.record(rows, idx, dist)
        self.inserted = self.lists.insert(rows, idx, dist)

    def close(self) -> None:
        self.index.close()

    def settle(self) -> None:
        """Put the pending faces into the lists even when nothing was searched (a rerun whose
        snapshot already holds them): the lists written after the night must know them."""
        if self.pending is not None:
            self._prepare(0)

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.pending is not None:
            self._prepare(k)
        rows = np.asarray(rows, np.int64)
        ids, dist = np.full((len(rows), k), -1, np.int64), np.full((len(rows), k), np.inf, np.float32)
        at = np.minimum(np.searchsorted(self.wide_rows, rows), max(len(self.wide_rows) - 1, 0))
        wide = np.zeros(len(rows), bool)
        if self.wide is not None and k <= self.wide[0].shape[1]:
            wide = self.wide_rows[at] == rows
            ids[wide], dist[wide] = self.wide[0][at[wide], :k], self.wide[1][at[wide], :k]
        listed = ~wide & self.lists.valid[rows] & (k <= self.lists.k)
        if listed.any():
            ids[listed], dist[listed] = self.lists.nbr[rows[listed], :k], self.lists.dist[rows[listed], :k]
        rest = np.flatnonzero(~wide & ~listed)
        rest = rest[self.index.search_order(rows[rest])]
        for s in range(0, len(rest), 2**18):  # a first night searches every face: 262,144 at a time (150 MB)
            part = rest[s : s + 2**18]
            fi, fd = self.index.search(rows[part], max(k, self.lists.k))
            self.searched += len(part)
            self.lists.record(rows[part], fi, fd)
            ids[part], dist[part] = fi[:, :k], fd[:, :k]
        return ids, dist
