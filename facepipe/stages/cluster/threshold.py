"""The link threshold: the embedding distance under which two faces may be linked as one person.

One global cut cannot serve every archive (bench/RESULTS.md, "Identities at thousands of real
people"): among the 2,069 small portraits of 1,758 parliamentarians, dlib's embeddings put some
different people 0.45 apart and precision needs 0.40; among 80 photos of 23 people in the wild
recall needs 0.51. What differs is how many *other* people a face can be confused with: a face
meets ~N others, so the chance that one of them falls under the cut grows with N.

:func:`auto_threshold` (``--cluster-threshold auto``, the default) picks the cut from the archive's own
distances: the distances between random faces are mostly distances between different people,
close to a normal law (:func:`bulk_law`: the median ``mu`` without the same-person pairs far
below it, and ``sigma`` measured on the lower side), whose tail predicted the portraits'
different-person pairs under 0.38-0.50 within 1.8 times.
The cut is the distance under which a face is expected to meet at most ``false_links``
different-person neighbours among the N faces: ``mu + sigma * z(false_links / N)``, clamped to
``bounds``. A larger archive gets a tighter cut; a sparse one, of few people far apart, a
looser one; one of under :data:`LAW_MIN_FACES` distinct faces, the upper bound. The pairs are
drawn in an order of the embeddings themselves (:func:`content_order`), so the cut does not
depend on the order of the faces. Once the k-NN graph is built, the cut is raised where the
archive's own pairs near it are mostly one person (:mod:`facepipe.stages.cluster.fdr`: a
false-discovery rate), up to the same upper bound.

Identities must stay put from night to night, so the cut is chosen when the archive is clustered
in full (the first night, ``--full``) and kept with the snapshot (:func:`attach`,
:func:`stored`); incremental nights reuse it. Once the archive has grown past
:data:`REESTIMATE_GROWTH` times the faces it was chosen for, the stage says that a ``--full`` run
would choose again.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np
import pyarrow as pa

from facepipe.flags import positive_float
from facepipe.stages.cluster.arrays import CHUNK
from facepipe.stages.cluster.constraints import canonical_order

log = logging.getLogger(__name__)

AUTO = "auto"
#: expected different-person neighbours under the cut, per face
FALSE_LINKS = 0.005
#: the cut stays within these. Below 0.35 dlib's same-person pairs are mostly lost. The bulk law
#: cannot see a population of look-alikes apart from the bulk, so the upper bound is set by
#: measurement: the 10^6 synthetic faces (look-alikes drawn 0.50-0.65 apart, a bulk that alone
#: allows 0.61) keep BCubed precision 0.99997 at 0.52 and lose it at 0.55 (0.9996); the wild
#: photos merged two people at 0.60 and need 0.51 (bench/RESULTS.md).
BOUNDS = (0.35, 0.52)
#: the second pass's cut stays under this (:func:`linkage_cut`): the 10^5 synthetic faces, whose
#: look-alikes (0.50-0.65 apart) the law cannot see, keep BCubed precision 0.99994 at 0.55 and
#: lose it at 0.60 (0.99980); bench/RESULTS.md
LINKAGE_BOUND = 0.55
#: under this many distinct faces (copies of one face count once) the bulk is not measured and the
#: cut is the upper bound, as the law gives it at dlib's bulk up to ~15 faces: on a few hundred
#: pairs, many of one person or of copies, its median can be a same-person distance and its spread
#: off by half. Halves of the job tests' real photos (9-15 faces) fell to the lower bound in 13%
#: of 300 draws; random 16 of the portraits' faces in 1%, 24 of the wild set's in 1%, 32 in none.
LAW_MIN_FACES = 32
#: random pairs the bulk is measured on (all pairs below this many)
PAIRS = 50_000
#: pairs more than this many spreads under the bulk's median are taken as same-person pairs
CLIP = 3.0
#: the snapshot's archive grew this many times since the cut was chosen: a --full run would choose again
REESTIMATE_GROWTH = 2.0
#: what an incremental night uses over a snapshot that recorded no cut (written before it was kept)
LEGACY = 0.45
_KEY = b"facepipe.cluster.link_threshold"


@dataclass(frozen=True)
class LinkThreshold:
    """The cut and how it was chosen: ``how`` "auto" (with the archive's size and bulk),
    "fixed" (a number given), or "legacy" (a snapshot that recorded none)."""

    value: float
    how: str
    faces: int = 0
    mu: float | None = None
    sigma: float | None = None
    #: the second pass's cut on the RMS distance of two identities (:func:`linkage_cut`); None:
    #: a snapshot written before the second pass (its nights merge nothing there)
    linkage: float | None = None
    #: the law's cut where the archive's own pairs raised ``value`` above it
    #: (:mod:`facepipe.stages.cluster.fdr`); None: not raised
    law: float | None = None


def content_order(x: np.ndarray) -> np.ndarray:
    """An order of the rows that depends on their values only: by their projection on a fixed
    direction (one pass: :func:`canonical_order`'s full lexicographic sort took 20 s at 10^6
    faces, and the stage sorts that way again), falling back to that sort when two different
    rows project alike."""
    x = np.asarray(x, np.float32)
    direction = np.random.default_rng(12345).normal(size=x.shape[1])
    # float64: distinct rows of 10^6 meet only by chance (~1e-4); in chunks, as x @ direction makes
    # a float64 copy of x (1 GB at 10^6) -- the same products, row by row
    proj = np.concatenate([np.zeros(0), *(x[c : c + CHUNK] @ direction for c in range(0, len(x), CHUNK))])
    order = np.argsort(proj, kind="stable")
    p = proj[order]
    tied = np.flatnonzero(p[1:] == p[:-1])
    if len(tied) and not all(np.array_equal(x[order[i]], x[order[i + 1]]) for i in tied):
        return canonical_order(x)
    return order


def bulk_law(d: np.ndarray, clip: float = CLIP) -> tuple[float, float]:
    """The normal law of the different-person pairs among the distances ``d``, as ``(mu, sigma)``.

    ``mu`` is the median. The pairs more than ``clip`` spreads below it are same-person pairs,
    far under the bulk: they are left out and the median taken again until none moves across
    that line (the spread for the line is measured above the median, where same-person pairs
    do not fall; in a small archive of a few people many random pairs are of one person, and
    left in they pulled 10 faces' cut to the lower bound). ``sigma`` is measured on the lower
    side, between the line and ``mu``, and corrected for the cut-off part: that is the tail the
    cut extrapolates, and it is heavier than the upper side's (dlib's distances lean left:
    the portraits' 0.087 below, 0.083 above). With it the law predicted the portraits'
    different-person pairs under 0.38 to 0.50 within 1.8 times, where the upper side's spread
    missed by up to 5 times (bench/RESULTS.md; printed by ``bench.accuracy.portraits_set``).
    Where no cut-off normal law fits the lower side (as flat as a uniform one or flatter: few
    pairs), the correction would run to infinity and the cut to the lower bound: ``sigma`` is
    then the line's distance from ``mu``."""
    d = np.sort(np.asarray(d, np.float64))
    start = 0
    for _ in range(50):
        kept = d[start:]
        mu = float(np.median(kept))
        upper = kept[kept > mu]
        spread = float(np.sqrt(np.mean((upper - mu) ** 2))) if len(upper) else 0.0
        first = int(np.searchsorted(d, mu - clip * spread))
        if first == start:
            break
        start = first
    lower = kept[kept < mu]
    if not len(lower):
        return mu, spread
    rms = float(np.sqrt(np.mean((mu - lower) ** 2)))
    if np.isinf(clip) or not spread:
        return mu, rms
    sigma = rms
    for _ in range(20):  # the half of a normal law cut off at c sigmas keeps this share of its variance
        c = clip * spread / sigma
        sigma = rms / np.sqrt(1 - 2 * c * NormalDist().pdf(c) / (2 * NormalDist().cdf(c) - 1))
        if sigma >= clip * spread:  # no normal law fits: the lower side is as flat as a uniform one
            return mu, float(clip * spread)
    return mu, float(sigma)


def _distinct_rows(x: np.ndarray, order: np.ndarray, m: int) -> bool:
    """Whether the rows of ``x`` hold ``m`` distinct ones: copies lie side by side in content
    order (compared :data:`CHUNK` rows at a time, stopping once ``m`` are seen)."""
    seen = 1
    for c in range(1, len(order), CHUNK):
        now, before = order[c : c + CHUNK], order[c - 1 : c - 1 + CHUNK]
        seen += int(np.any(x[now] != x[before[: len(now)]], axis=1).sum())
        if seen >= m:
            return True
    return seen >= m


def auto_threshold(
    x: np.ndarray, false_links: float = FALSE_LINKS, bounds: tuple[float, float] = BOUNDS, pairs: int = PAIRS
) -> LinkThreshold:
    """The cut for the (N, D) embeddings ``x`` (see the module text)."""
    n, x = len(x), np.asarray(x, np.float32)
    order = content_order(x) if n else np.zeros(0, np.int64)  # rows are named in it: no copy of x (5 GB at 10^7)
    if n < LAW_MIN_FACES or not _distinct_rows(x, order, LAW_MIN_FACES):
        return LinkThreshold(bounds[1], AUTO, n)
    if n * (n - 1) // 2 <= pairs:
        a, b = np.triu_indices(n, 1)
    else:
        rng = np.random.default_rng(0)
        a = rng.integers(0, n, pairs)
        b = rng.integers(0, n - 1, pairs)
        b = b + (b >= a)
    mu, sigma = bulk_law(np.linalg.norm(x[order[a]] - x[order[b]], axis=1))
    cut = mu + sigma * NormalDist().inv_cdf(min(0.5, false_links / n))
    return LinkThreshold(round(float(np.clip(cut, *bounds)), 4), AUTO, n, round(mu, 4), round(sigma, 4))


def linkage_cut(
    link: LinkThreshold,
    labels: np.ndarray,
    min_faces: int,
    false_links: float = FALSE_LINKS,
    upper: float = LINKAGE_BOUND,
) -> float:
    """The second pass's cut (:mod:`facepipe.stages.cluster.linkage`) after a first pass gave
    ``labels``: the RMS distance under which two identities are expected to be merged by chance
    no more often than the first pass links two faces by chance -- its budget (``false_links``
    per face: ``false_links * N / 2`` links among the N faces' pairs) spread over the pairs the
    second pass tests (identities of ``min_faces`` faces or more, times all identities), on the
    same law (the RMS distances of two people's faces lie above their closest pair: measured,
    the law of random identity pairs sat 0.00-0.03 above that of random face pairs). Few large
    identities (a few people photographed many times) are few tests: a looser cut. Never under
    the first cut (an RMS distance under it has a face pair under it), never above ``upper``; the
    first cut itself where the law is unknown (a cut given as a number)."""
    if link.mu is None or link.sigma is None or not link.faces:
        return link.value
    counts = np.bincount(labels[labels >= 0])
    counts = counts[counts > 0]
    tested = int((counts >= min_faces).sum()) * len(counts)
    if not tested:
        return link.value
    z = NormalDist().inv_cdf(min(0.5, false_links * link.faces / 2 / tested))
    return round(float(np.clip(link.mu + link.sigma * z, link.value, max(upper, link.value))), 4)


def threshold_setting(text: str) -> float | str:
    """``--cluster-threshold``: a distance > 0, or ``auto``."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return positive_float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a distance > 0 nor 'auto'") from None


def attach(table: pa.Table, t: LinkThreshold) -> pa.Table:
    """``table`` (a snapshot table) carrying the cut in its schema metadata."""
    meta = dict(table.schema.metadata or {})
    meta[_KEY] = json.dumps(asdict(t)).encode()
    return table.replace_schema_metadata(meta)


def stored(schema: pa.Schema | None) -> LinkThreshold | None:
    """The cut a snapshot table's schema carries, or None."""
    raw = (schema.metadata or {}).get(_KEY) if schema is not None else None
    if raw is None:
        return None
    try:
        return LinkThreshold(**json.loads(raw))
    except (ValueError, TypeError):
        log.warning("the identity snapshot's link threshold cannot be read: %r", raw[:200])
        return None


def resolve(setting: float | str, x: np.ndarray, previous: LinkThreshold | None, full: bool) -> LinkThreshold:
    """The cut a clustering uses: a number as given; ``auto`` chosen now for a full clustering,
    else the snapshot's -- for a snapshot clustered with a number or before cuts were kept, that
    number (:data:`LEGACY`: the default then), so an incremental night never renames people."""
    if setting != AUTO:
        return LinkThreshold(float(setting), "fixed", len(x))
    if full:
        return auto_threshold(x)
    if previous is None or previous.how != AUTO:  # a snapshot clustered before, with a fixed cut
        value = LEGACY if previous is None else previous.value
        log.info("the identity snapshot was clustered at %.3f: kept (a --full run chooses the cut)", value)
        return LinkThreshold(value, "legacy", len(x))
    if previous.how == AUTO and previous.faces and len(x) >= REESTIMATE_GROWTH * previous.faces:
        log.warning(
            "the link threshold %.3f was chosen for %d faces; the archive has %d: `facepipe cluster --full` "
            "would choose it again (identities may then change)", previous.value, previous.faces, len(x),
        )  # fmt: skip
    return previous
