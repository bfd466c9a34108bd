"""The outlier score's embedding term: how far a face's embedding lies off the confident faces'.

DROCC on landmark offsets and sharpness, and the face verifier, judge whether a detection is a
usable face; neither looks at the embedding, so a row whose embedding means nothing (coordinates
permuted, another model's vector of the same size, a corrupted write) scored as normal (AUC 0.58,
issue 32). Non-faces cannot be caught here -- they fall into a tight central cluster of the
identity embedding (bench/RESULTS.md, "Outlier scoring on real detections") -- so this term only
speaks far *outside* the faces: a Gaussian law of the confident faces' embeddings (mean, and a
covariance shrunk towards a multiple of the identity by Ledoit and Wolf's formula, since a night
may have fewer faces than dimensions), the Mahalanobis distance of each face, and a term that is 0
up to the faces' own ``TAIL`` quantile of that distance (measured out of sample) and grows past it
by ``SLOPE`` log-odds per tail distance, up to ``CAP``. Measured on the real detections of
``bench/accuracy/outlier_scores.py`` (326 confident faces): the faces' distances have median 6.0
and 99.9% quantile 43 (non-faces: 32-41, inside -- they are not this term's to catch); rows with
a face's embedding permuted lie at 172 and more, four tail distances out.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: the term is 0 for the fitted faces up to this quantile of their distances
TAIL = 0.999
#: log-odds per tail distance past the tail, and at most (the verifier's log-odds for clear faces
#: are 4-10: a row twice as far out as the faces' tail outweighs any of them)
SLOPE = 20.0
CAP = 20.0


@dataclass
class EmbeddingDensity:
    mean: np.ndarray  # (D,) float64
    whiten: np.ndarray  # (D, D) float64: x -> whiten @ (x - mean) has identity covariance under the law
    median: float  # of the fitted faces' Mahalanobis distances
    tail: float  # their TAIL quantile
    n: int  # faces fitted on
    shrinkage: float  # Ledoit-Wolf's weight on the identity

    @property
    def dim(self) -> int:
        return len(self.mean)

    def distances(self, x: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N,) Mahalanobis distances (float64, so a row's value does not
        depend on the rows batched with it)."""
        z = (np.asarray(x, np.float64) - self.mean) @ self.whiten.T
        return np.sqrt(np.einsum("ij,ij->i", z, z))

    def term(self, x: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N,) float32 log-odds to add to the outlier score (>= 0); rows of
        NaN (no embedding) get 0."""
        d = self.distances(np.nan_to_num(x))
        out = np.clip(SLOPE * (d / max(self.tail, 1e-9) - 1), 0.0, CAP)
        out[~np.isfinite(np.asarray(x, np.float64)).all(axis=1)] = 0.0
        return out.astype(np.float32)

    def to_dict(self) -> dict:
        # "centre", not "mean": the artifact's pickle would share that string with the network's
        # buffer name in one process and not in another, and the model's id hashes the bytes
        return {
            "centre": self.mean.tolist(),
            "whiten": self.whiten.tolist(),
            "median": self.median,
            "tail": self.tail,
            "n": self.n,
            "shrinkage": self.shrinkage,
        }

    @staticmethod
    def from_dict(d: dict) -> "EmbeddingDensity":
        return EmbeddingDensity(
            np.asarray(d["centre"], np.float64),
            np.asarray(d["whiten"], np.float64),
            float(d["median"]),
            float(d["tail"]),
            int(d["n"]),
            float(d["shrinkage"]),
        )


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """(covariance shrunk towards mu * I, the shrinkage) of the rows of ``x`` (Ledoit & Wolf, 2004)."""
    n, p = x.shape
    xc = x - x.mean(0)
    s = np.einsum("ni,nj->ij", xc, xc, optimize=False) / n  # not BLAS: the same bits on any thread count
    mu = np.trace(s) / p
    delta = np.sum((s - mu * np.eye(p)) ** 2) / p
    sq = np.einsum("ij,ij->i", xc, xc)
    beta = (np.sum(sq**2) - 2 * np.einsum("ij,jk,ik->", xc, s, xc) + n * np.sum(s**2)) / (n * n * p)
    shrink = float(min(beta, delta) / delta) if delta > 0 else 1.0
    return shrink * mu * np.eye(p) + (1 - shrink) * s, shrink


def _f32(v):
    """Rounded to float32 and back: the law's parameters come out of LAPACK, whose last bits may
    follow the thread count (a Ray task and the driver), and the model's id hashes them."""
    return np.asarray(v, np.float32).astype(np.float64)


def _law(x: np.ndarray) -> EmbeddingDensity:
    cov, shrink = ledoit_wolf(x)
    cov += np.eye(len(cov)) * np.trace(cov) / len(cov) * 1e-9  # positive definite with any shrinkage
    whiten = np.linalg.inv(np.linalg.cholesky(cov))  # lower triangular: z = whiten @ (x - mean)
    return EmbeddingDensity(_f32(x.mean(0)), _f32(whiten), 0.0, 0.0, len(x), float(np.float32(shrink)))


def fit_density(x: np.ndarray) -> EmbeddingDensity:
    """The law of the (N, D) embeddings of confident faces (rows in a fixed order: the stage's
    face id order). The median and tail of the distances are measured out of sample -- each half
    of the faces against the law of the other half -- because a face the law was fitted on sits
    closer to it than a new face does (with fewer faces than dimensions, much closer)."""
    x = np.asarray(x, np.float64)
    law = _law(x)
    if len(x) >= 4:
        halves = (x[0::2], x[1::2])
        d = np.concatenate([_law(a).distances(b) for a, b in (halves, halves[::-1])])
    else:
        d = law.distances(x)
    # a few faces hold no 99.9% quantile (20 of them: their largest is the 95%): the quantile of a
    # log-normal law of the distances stands in where it lies further out
    lognormal = np.exp(np.mean(np.log(d)) + np.std(np.log(d)) * NormalDist().inv_cdf(TAIL))
    law.median, law.tail = float(np.float32(np.median(d))), float(np.float32(max(np.quantile(d, TAIL), lognormal)))
    return law
