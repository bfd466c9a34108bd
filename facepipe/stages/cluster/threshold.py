"""The link threshold: the embedding distance under which two faces may be linked as one person.

One global cut cannot serve every archive (bench/RESULTS.md, "Identities at thousands of real
people"): among the 2,069 small portraits of 1,758 parliamentarians, dlib's embeddings put some
different people 0.45 apart and precision needs 0.41; among 80 photos of 23 people in the wild
recall needs 0.52. What differs is how many *other* people a face can be confused with: a face
meets ~N others, so the chance that one of them falls under the cut grows with N.

:func:`auto_threshold` (``--cluster-threshold auto``, the default) picks the cut from the archive's own
distances: the distances between random faces are, but for a small share, distances between
different people; their bulk is close to a normal law (median ``mu``, and ``sigma`` measured on
the upper half, where same-person pairs hardly ever fall), whose lower tail predicted the portraits'
different-person pairs under 0.45-0.5 within 10% (3.1e-5 measured, 3.4e-5 predicted at 0.45).
The cut is the distance under which a face is expected to meet at most ``false_links``
different-person neighbours among the N faces: ``mu + sigma * z(false_links / N)``, clamped to
``bounds``. A larger archive gets a tighter cut; a sparse one, of few people far apart, a
looser one. The pairs are drawn in an order of the embeddings themselves (:func:`content_order`),
so the cut does not depend on the order of the faces.

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
from facepipe.stages.cluster.constraints import canonical_order

log = logging.getLogger(__name__)

AUTO = "auto"
#: expected different-person neighbours under the cut, per face
FALSE_LINKS = 0.005
#: the cut stays within these (below 0.35 dlib's same-person pairs are mostly lost; above 0.55
#: different people of good photos meet: face_recognition's verification threshold is 0.6)
BOUNDS = (0.35, 0.55)
#: random pairs the bulk is measured on (all pairs below this many)
PAIRS = 50_000
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


def content_order(x: np.ndarray) -> np.ndarray:
    """An order of the rows that depends on their values only: by their projection on a fixed
    direction (one pass: :func:`canonical_order`'s full lexicographic sort took 20 s at 10^6
    faces, and the stage sorts that way again), falling back to that sort when two different
    rows project alike."""
    x = np.asarray(x, np.float32)
    direction = np.random.default_rng(12345).normal(size=x.shape[1])
    proj = x @ direction  # float64: distinct rows of 10^6 meet only by chance (~1e-4)
    order = np.argsort(proj, kind="stable")
    p = proj[order]
    tied = np.flatnonzero(p[1:] == p[:-1])
    if len(tied) and not all(np.array_equal(x[order[i]], x[order[i + 1]]) for i in tied):
        return canonical_order(x)
    return order


def auto_threshold(
    x: np.ndarray, false_links: float = FALSE_LINKS, bounds: tuple[float, float] = BOUNDS, pairs: int = PAIRS
) -> LinkThreshold:
    """The cut for the (N, D) embeddings ``x`` (see the module text)."""
    n = len(x)
    if n < 3:
        return LinkThreshold(bounds[1], AUTO, n)
    xc = np.asarray(x, np.float32)[content_order(x)]
    if n * (n - 1) // 2 <= pairs:
        a, b = np.triu_indices(n, 1)
    else:
        rng = np.random.default_rng(0)
        a = rng.integers(0, n, pairs)
        b = rng.integers(0, n - 1, pairs)
        b = b + (b >= a)
    d = np.linalg.norm(xc[a] - xc[b], axis=1)
    mu = float(np.median(d))
    upper = d[d > mu]
    sigma = float(np.sqrt(np.mean((upper - mu) ** 2))) if len(upper) else 0.0
    cut = mu + sigma * NormalDist().inv_cdf(min(0.5, false_links / n))
    return LinkThreshold(round(float(np.clip(cut, *bounds)), 4), AUTO, n, round(mu, 4), round(sigma, 4))


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
