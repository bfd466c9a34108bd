"""The outlier score's detail term: a face whose chip is blurred past what the embedder can identify.

A blurred face is still a face -- the verifier says so and DROCC, trained on a run's confident
faces (blurred ones among them), finds its geometry typical -- but its embedding no longer says
who it is, and blurred faces of different people fall together: they are the chips that bridge
identities (issue 32). Measured on the wild set's 198 faces of at least 40 px, each chip blurred
by a Gaussian of sigma = a share of the face's width (``bench/accuracy/blurred_faces.py``,
bench/RESULTS.md "Blurred faces"): at 1% dlib's embedding moves 0.13 from the sharp chip's
(median), at 2% 0.28, at 3% 0.39 -- as far as two photos of one person lie apart -- and at 10%
0.69, while 14% of the blurred faces' pairs (different people) fall under 0.445, against 2.5%
sharp. The chip's ``detail`` (``facepipe.stages.align.quality``: not its contrast, so faded prints
and tinted duotones keep theirs) falls from a median of -1.9 (the lowest of 198: -4.52) to
-3.6 at 1%, -4.9 at 2% and -5.6 at 3% (5% of them still above -4.8); among 2,089 small
portraits 17 lie under -4.5.

So the term is 0 for a chip at or above :data:`MIN_DETAIL` (about 1.5% of blur: the embedding
moved 0.2) and rises steeply below it, :data:`SLOPE` log-odds per unit of detail up to
:data:`CAP`: a chip 0.2 under the floor is flagged whatever the verifier says (a clear face's
log-odds are 4-13 -- the verifier is as sure of a blurred face as of a sharp one), and the ramp,
not a step, keeps a face's flag from flipping on a rounding. Faces narrower than ``min_face``
are not judged on it: their chip is upsampled from a few pixels, so their detail measures their
size, and the identity stage leaves them out as too small already. Rows written before
``faces.detail`` existed (null) get 0. A known limit: a face cut by the image's border is
sampled past it, and the edge of the fill reads as detail -- a blurred one is not caught. The
floor is the dlib ResNet's (the default embedder's 150 px chip); ``--outlier-min-detail`` sets another.
"""

from __future__ import annotations

import numpy as np

from facepipe.stages.cluster.identities import MIN_FACE_WIDTH

#: below this ``faces.detail`` the chip is taken as too blurred to identify (module text)
MIN_DETAIL = -4.5
#: log-odds per unit of detail under the floor, and at most
SLOPE = 100.0
CAP = 20.0
#: faces narrower than this (pixels of the image) are not judged on detail: the identity stage's
#: ``--cluster-min-face`` default, the faces it clusters
MIN_FACE = float(MIN_FACE_WIDTH)


def detail_terms(detail: np.ndarray, width: np.ndarray, min_detail: float = MIN_DETAIL, min_face: float = MIN_FACE):
    """(N,) float32 log-odds to add to the outlier score (>= 0) for faces of chip ``detail`` (NaN:
    not measured) and box ``width``."""
    d = np.asarray(detail, np.float64)
    out = np.clip(SLOPE * (min_detail - np.nan_to_num(d, nan=np.inf)), 0.0, CAP)
    out[~(np.asarray(width, np.float64) >= min_face)] = 0.0
    return out.astype(np.float32)
