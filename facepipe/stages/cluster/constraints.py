"""What every clustering keeps to, whatever the method: an order that depends on the embeddings
only (:func:`canonical_order`: the same faces give the same identities whatever their order, ids
or paths), the cannot-link of faces of one image (:func:`cannot_link` cuts their links,
:func:`split_same_image` parts any that still end up together), and the must-links, cannot-links
and names a person recorded (:func:`apply_corrections`; the table they come from:
:mod:`facepipe.stages.cluster.corrections`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from facepipe.stages.cluster.arrays import CHUNK, positions
from facepipe.stages.cluster.graph import NeighbourIndex
from facepipe.stages.cluster.methods import components


def canonical_order(x: np.ndarray) -> np.ndarray:
    """A permutation of the rows of ``x`` that depends on their values only (lexicographic order of
    the embeddings): clustering in this order gives the same identities whatever the order, ids or
    paths of the inputs. ``np.lexsort``'s order, sorted by the first column, then only the rows
    that tie there by the second, and so on (a 128-key lexsort took 25 s at 10^6 faces; of the rows
    tied on the first column, about 10^5 at 3x10^6, still 2 s)."""
    x = np.asarray(x)
    if not len(x):
        return np.zeros(0, np.int64)
    order = np.argsort(x[:, 0], kind="stable")
    at = np.arange(len(x))  # positions (in ``order``) of the rows still in a tie, and their runs
    run = np.zeros(len(x), np.int64)
    for j in range(x.shape[1]):  # column by column, only the rows that tie on every column before
        if j:
            rows = order[at]
            by = np.lexsort((x[rows, j], run))
            order[at], run = rows[by], run[by]
        v = x[order[at], j]
        tied = (run[1:] == run[:-1]) & (v[1:] == v[:-1])
        if not tied.any():
            break
        keep = np.r_[tied, False] | np.r_[False, tied]
        new_run = np.cumsum(np.r_[True, ~tied])  # a run: equal on the columns so far
        at, run = at[keep], new_run[keep]
    return order


class Reordered:
    """``x[order]`` without copying it (half a gigabyte at 10^6 faces): rows are looked up when
    indexed, by positions, a boolean mask or one position."""

    def __init__(self, x: np.ndarray, order: np.ndarray) -> None:
        self.x, self.order = x, order
        self.shape = (len(order), *x.shape[1:])

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, rows):
        rows = np.flatnonzero(rows) if isinstance(rows, np.ndarray) and rows.dtype == bool else rows
        return self.x[self.order[rows]]


class Permuted(NeighbourIndex):
    """An index over ``x`` answering in the positions of ``x[order]``."""

    def __init__(self, index: NeighbourIndex, order: np.ndarray) -> None:
        self.index, self.order, self.backend = index, order, index.backend
        self.inverse = np.empty_like(order)
        self.inverse[order] = np.arange(len(order))

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx, dist = self.index.search(self.order[rows], k)
        for s in range(0, len(idx), CHUNK):  # in place, in chunks: no temporaries of every face's k
            part = idx[s : s + CHUNK]
            part[...] = np.where(part >= 0, self.inverse[np.maximum(part, 0)], -1)
        return idx, dist


def cannot_link(idx: np.ndarray, dist: np.ndarray, rows: np.ndarray, image_ids: np.ndarray | None) -> np.ndarray:
    """``dist`` with the links between two faces of one image cut (infinite): they are never one person."""
    if image_ids is None:
        return dist
    out = dist.copy()
    for s in range(0, len(idx), CHUNK):
        i = idx[s : s + CHUNK]
        same = (i >= 0) & (image_ids[np.maximum(i, 0)] == image_ids[rows[s : s + CHUNK]][:, None])
        out[s : s + CHUNK][same] = np.inf
    return out


def split_same_image(
    labels: np.ndarray, x: np.ndarray, image_ids: np.ndarray | None, movable: np.ndarray, regroup: float = 0.0
) -> np.ndarray:
    """Where one identity holds two faces of one image, the face nearest the identity's mean stays
    (or the one that may not move) and every other leaves it; the pairs go by identity, then by
    their first face (rows: the clustering's order, not the image ids). Each face that left is an
    identity of its own -- or, with ``regroup`` (the link cut), the faces one identity gave up are
    grouped again among themselves (:func:`regrouped`), so the second of two people of one photo
    that the clustering joined keeps its faces together rather than falling into single faces."""
    if image_ids is None:
        return labels
    out = labels.copy()
    while True:
        out, left = _split_once(out, x, image_ids, movable)
        if not regroup or not left:
            return out
        before = out.copy()
        for faces in left:
            out = regrouped(out, x, image_ids, faces, regroup)
        if np.array_equal(before, out):  # nothing joined again: no new pair of one image to part
            return out


def _split_once(out: np.ndarray, x, image_ids: np.ndarray, movable: np.ndarray) -> tuple[np.ndarray, list]:
    """One pass of :func:`split_same_image`: (the labels, each face that left an identity of its
    own; the faces that left, per identity in the order of the pairs, for :func:`regrouped`)."""
    nxt = int(out.max(initial=-1)) + 1
    rows = np.flatnonzero(out >= 0)
    if not len(rows):
        return out, []
    image, span = image_numbers(np.asarray(image_ids)[rows])
    pair = out[rows].astype(np.int64) * span + image  # (identity, image): one number
    uniq, inv, counts = np.unique(pair, return_inverse=True, return_counts=True)
    key, left = {}, {}
    for i in rows[counts[inv] > 1]:  # only the pairs held twice or more (a Python loop over all took 8 s at 10^6)
        key.setdefault((int(out[i]), image_ids[i]), []).append(i)
    for (lab, _), members in sorted(key.items(), key=lambda kv: (kv[0][0], kv[1][0])):
        centre = x[out == lab].mean(0)
        keep = min(members, key=lambda i: (bool(movable[i]), float(np.linalg.norm(x[i] - centre)), i))
        for i in members:
            if i != keep and movable[i]:
                out[i], nxt = nxt, nxt + 1
                left.setdefault(lab, []).append(i)
    return out, [np.array(sorted(v)) for _, v in sorted(left.items())]


def regrouped(labels: np.ndarray, x, image_ids: np.ndarray, faces: np.ndarray, cut: float) -> np.ndarray:
    """``labels`` with ``faces`` (each an identity of its own) joined where a chain of faces closer
    than ``cut``, of different images, links them: each group takes its first face's label."""
    if len(faces) < 2:
        return labels
    xe, img = np.asarray(x[faces], np.float32), np.asarray(image_ids)[faces]
    a, b = [], []
    for s in range(0, len(faces), 1024):  # the faces one identity gave up: few, but never all pairs at once
        d = np.linalg.norm(xe[s : s + 1024, None] - xe[None], axis=2)
        r, c = np.nonzero((d < cut) & (img[s : s + 1024, None] != img[None]))
        a.append(r + s), b.append(c)
    out = labels.copy()
    out[faces] = labels[faces[components(len(faces), np.concatenate(a), np.concatenate(b))]]
    return out


def image_numbers(image_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """(a number 0 <= n < span per face, equal for one image; span): the stage's image numbers as
    they come (-1: no image, one of its own), image id strings (None: no image) numbered here."""
    if image_ids.dtype.kind in "iu":
        return image_ids.astype(np.int64) + 1, int(image_ids.max(initial=-1)) + 2
    coded = pa.array(np.asarray(image_ids, object), pa.string()).dictionary_encode()
    return coded.indices.fill_null(len(coded.dictionary)).to_numpy().astype(np.int64), len(coded.dictionary) + 1


def drop_small(labels: np.ndarray, min_faces: int) -> np.ndarray:
    """``labels`` with the groups of fewer than ``min_faces`` faces unassigned (-1)."""
    if min_faces <= 1:
        return labels
    ok = labels >= 0
    _, inv, counts = np.unique(labels[ok], return_inverse=True, return_counts=True)
    out = labels.copy()
    out[np.flatnonzero(ok)[counts[inv] < min_faces]] = -1
    return out


log = logging.getLogger(__name__)


@dataclass
class Applied:
    labels: np.ndarray  # the labels with the corrections in force; new groups numbered past the others
    names: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # label -> (name, correction id, face id)
    by_label: dict[int, list[str]] = field(default_factory=dict)  # label -> correction ids that shaped it
    moved: dict[int, str] = field(default_factory=dict)  # row moved out by a cannot-link -> its correction id
    in_force: int = 0  # corrections whose faces are clustered, less the refused ones
    waiting: int = 0  # corrections whose faces are not clustered
    conflicts: list[str] = field(default_factory=list)  # must-links refused (a cannot-link wins)

    def given(self) -> dict[int, str]:
        """Label -> the name a correction gave it."""
        return {lab: g[0] for lab, g in self.names.items()}

    def summary(self) -> dict:
        return {"in_force": self.in_force, "waiting": self.waiting, "refused": self.conflicts}


def apply_corrections(
    face_ids: list[str], labels: np.ndarray, image_ids: np.ndarray | None, corrections: pa.Table | None
) -> Applied:
    """``labels`` (N,) of the faces ``face_ids`` with ``corrections`` (rows of
    ``facepipe.schema.CORRECTIONS`` in the order they apply) in force: must-links first -- two
    groups joined unless that puts two faces of one image, or both faces of a ``different`` row,
    in one identity (refused: a cannot-link wins) --, then cannot-links (the named face leaves
    for an identity of its own), then names (the latest per identity). A face a correction names
    stands in an identity even if it was left alone; a correction whose face is not among
    ``face_ids`` waits."""
    labels = np.asarray(labels, np.int64).copy()
    res = Applied(labels)
    if corrections is None or corrections.num_rows == 0:
        return res
    pos = positions(face_ids, [f for c in ("face_id", "other_face_id") for f in corrections.column(c).to_pylist() if f])
    ends = lambda r: (r["face_id"],) if r["kind"] == "name" else (r["face_id"], r["other_face_id"])  # noqa: E731
    live = [r for r in corrections.to_pylist() if all(e in pos for e in ends(r))]
    res.waiting = corrections.num_rows - len(live)
    fresh = iter(range(int(labels.max(initial=-1)) + 1, 2**62))
    for r in live:  # a face a correction names stands in an identity, even if it was left alone
        for e in (r["face_id"], r.get("other_face_id")):
            if e in pos and labels[pos[e]] < 0:
                labels[pos[e]] = next(fresh)
    _join(labels, pos, image_ids, live, res)
    for r in (r for r in live if r["kind"] == "different"):
        i, j = pos[r["face_id"]], pos[r["other_face_id"]]
        if labels[i] == labels[j]:
            labels[i] = next(fresh)
            res.moved[i] = r["correction_id"]
            res.by_label.setdefault(int(labels[i]), []).append(r["correction_id"])
    for r in (r for r in live if r["kind"] == "name"):
        lab = int(labels[pos[r["face_id"]]])
        res.names[lab] = (r["name"], r["correction_id"], r["face_id"])  # the latest row wins
    present = set(labels.tolist())
    res.by_label = {lab: ids for lab, ids in res.by_label.items() if lab in present}
    res.labels, res.in_force = labels, len(live) - len(res.conflicts)
    return res


def _join(labels: np.ndarray, pos: dict, image_ids: np.ndarray | None, live: list[dict], res: Applied) -> None:
    """The must-links of ``live``, in order, on ``labels`` (in place): two groups become one unless
    that puts two faces of one image, or both faces of a ``different`` row, in it (refused)."""
    parent: dict[int, int] = {}
    members: dict[int, set[int]] = {}  # a group's rows, found once per label and joined on union

    def find(a: int) -> int:
        while parent.get(a, a) != a:
            a = parent[a]
        return a

    def rows_of(lab: int) -> set[int]:
        if lab not in members:
            members[lab] = set(np.flatnonzero(labels == lab).tolist())
        return members[lab]

    apart = [(pos[r["face_id"]], pos[r["other_face_id"]]) for r in live if r["kind"] == "different"]
    for r in (r for r in live if r["kind"] == "same"):
        a, b = find(int(labels[pos[r["face_id"]]])), find(int(labels[pos[r["other_face_id"]]]))
        if a == b:
            continue
        joined = rows_of(a) | rows_of(b)
        clash = image_ids is not None and len(set(image_ids[list(joined)].tolist())) < len(joined)
        if clash or any(i in joined and j in joined for i, j in apart):
            res.conflicts.append(r["correction_id"])
            log.warning(
                "correction %s (%s and %s are one person) is refused: it would put two faces of one image, "
                "or two faces said to be different people, in one identity", *(r[k] for k in _SAME),
            )  # fmt: skip
            continue
        keep, gone = min(a, b), max(a, b)
        parent[gone], members[keep] = keep, joined
        members.pop(gone, None)
        res.by_label.setdefault(keep, []).append(r["correction_id"])
    for lab in [lab for lab in set(labels.tolist()) if lab in parent]:
        labels[labels == lab] = find(lab)


_SAME = ("correction_id", "face_id", "other_face_id")
