"""Which clustering method, at which threshold? Measured on synthetic identities.

    .venv/bin/python -m bench.accuracy.cluster_methods [--identities 2000] [--k 10]

Synthetic embeddings that mimic dlib's (128-d): identities of Zipf-distributed sizes (1-80 faces),
faces scattered so two photos of one person are 0.25-0.5 apart on average (varying by person,
and by photo with a log-normal factor, so some pairs reach 0.6+), identities ~0.9 apart, and 5% of
identities given a look-alike (a sibling centre
0.50-0.65 away -- the case that merges people). Prints pairwise/BCubed F, NMI and merged-label
errors per method and threshold, and the chaining case (two tight groups joined by a thin bridge
of faces 0.4 apart).
"""

from __future__ import annotations

import argparse
import time
from typing import Iterator

import numpy as np

from bench import record


def synthetic(n_id: int, seed: int = 0, dim: int = 128) -> tuple[np.ndarray, np.ndarray]:
    sizes, parts = synthetic_parts(n_id, seed, dim)
    return np.concatenate([x for x, _ in parts]), np.repeat(np.arange(n_id), sizes)


def synthetic_parts(
    n_id: int, seed: int = 0, dim: int = 128, per_part: int = 20_000
) -> tuple[np.ndarray, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """``synthetic``'s faces, ``per_part`` identities at a time: the identity sizes, and an
    iterator of (faces float32, identity) -- the same numbers as ``synthetic`` without holding
    them all (10^7 faces are 5 GB as float32, and were 20 GB of float64 pieces at once)."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.zipf(1.7, n_id), 1, 80)
    centres = rng.normal(size=(n_id, dim)) * (0.9 / np.sqrt(2 * dim))
    twins = rng.choice(n_id, n_id // 20, replace=False)
    for t in twins:  # a look-alike of another identity
        o = (t + 1) % n_id
        d = rng.normal(size=dim)
        centres[t] = centres[o] + d / np.linalg.norm(d) * rng.uniform(0.5, 0.65)
    # spread like real photos: some people vary more than others (pairwise 0.25-0.5 typical), and
    # single faces stray further (a bad angle or light: x lognormal scale)
    person = rng.uniform(0.25, 0.5, n_id)

    def parts() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for a in range(0, n_id, per_part):
            b = min(a + per_part, n_id)
            x = np.concatenate(
                [
                    c + rng.normal(size=(s, dim)) * (p / np.sqrt(2 * dim)) * rng.lognormal(0, 0.25, (s, 1))
                    for c, s, p in zip(centres[a:b], sizes[a:b], person[a:b])
                ]
            )
            yield x.astype(np.float32), np.repeat(np.arange(a, b), sizes[a:b])

    return sizes, parts()


def chain(seed: int = 0, dim: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=dim)
    e /= np.linalg.norm(e)
    a = rng.normal(size=(25, dim)) * 0.2 / np.sqrt(2 * dim)
    b = e * 1.5 + rng.normal(size=(25, dim)) * 0.2 / np.sqrt(2 * dim)
    steps = np.arange(0.4, 1.5, 0.4)[:, None] * e[None]
    return np.concatenate([a, b, steps + rng.normal(size=steps.shape) * 0.05 / np.sqrt(dim)]).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--identities", type=int, default=2000)
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()
    from facepipe.stages.cluster.graph import knn
    from facepipe.stages.cluster.methods import chinese_whispers, mutual_density, threshold_components
    from facepipe.stages.cluster.metrics import evaluate_clusters

    x, y = synthetic(a.identities)
    t = time.perf_counter()
    idx, dist = knn(x, a.k)
    print(f"{len(x)} faces of {a.identities} identities; exact {a.k}-NN graph in {time.perf_counter() - t:.1f}s")
    methods = {
        "threshold components": lambda th: threshold_components(idx, dist, th),
        "mutual kNN + density": lambda th: mutual_density(idx, dist, th, min_core=2, min_faces=1),
        "chinese whispers": lambda th: chinese_whispers(idx, dist, th),
    }
    xc = chain()
    ic, dc = knn(xc, a.k)
    for name, f in methods.items():
        for th in (0.45, 0.5, 0.55, 0.6):
            t = time.perf_counter()
            r = evaluate_clusters(f(th).tolist(), y.tolist())
            print(
                f"{name:22s} th {th:.2f}  pairF {r.pairwise_f:.4f}  BCubedF {r.bcubed_f:.4f}  NMI {r.nmi:.4f}  "
                f"merged {r.merged_label_errors:4d}  clusters {r.n_clusters}  ({time.perf_counter() - t:.1f}s)"
            )
        g = {
            "threshold components": threshold_components(ic, dc, 0.5),
            "mutual kNN + density": mutual_density(ic, dc, 0.5, 3, 5),
            "chinese whispers": chinese_whispers(ic, dc, 0.5),
        }[name]
        print(
            f"{name:22s} chaining case at 0.5: the two groups "
            f"{'MERGED' if g[0] == g[25] and g[0] >= 0 else 'kept apart'}"
        )


if __name__ == "__main__":
    record.run(main, "bench.accuracy.cluster_methods")
