"""The threshold / precision / recall curve of the identity stage on the synthetic sets of
``bench.speed.cluster_scale`` (100k and 1M faces), with the cut ``auto`` chooses.

    .venv/bin/python -m bench.accuracy.threshold_curve [--faces 100000 1000000] [--thresholds 0.4,...]

The stage's own full clustering (:func:`cluster_embeddings`, default config but the cut) over one
neighbour search per set: the index answers each cut from the same kNN lists, as the stage would
compute them. The real sets' curves come from ``bench.accuracy.portraits_set`` and
``wild_set``; the synthetic faces are not real people (their look-alikes are drawn 0.50-0.65
apart, see ``bench.accuracy.cluster_methods``), so this curve checks scale, not quality.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench import record


class _Memo:
    """An index that answers a repeated search from its first answer (one search for every cut),
    each time a copy: the stage renumbers an answer in place (``constraints.Permuted``), and a
    shared one gave every cut after the first a scrambled graph (precision 0.25 at 10^5)."""

    def __init__(self, index) -> None:
        self.index, self.backend, self.memo = index, index.backend, {}

    def search(self, rows: np.ndarray, k: int):
        key = (hash(rows.tobytes()), len(rows), k)
        if key not in self.memo:
            self.memo[key] = self.index.search(rows, k)
        idx, dist = self.memo[key]
        return idx.copy(), dist.copy()


def synthetic_faces(n_faces: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The faces ``bench.speed.cluster_scale`` clusters at ``n_faces`` (all of them, both nights)."""
    from bench.accuracy.cluster_methods import synthetic
    from bench.speed.cluster_scale import faces_per_identity

    x, y = synthetic(int(round(n_faces / faces_per_identity())), seed=seed)
    pick = np.sort(np.random.default_rng(seed).choice(len(x), min(n_faces, len(x)), replace=False))
    return x[pick], y[pick]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--thresholds", default="0.40,0.45,0.50,0.52,0.55")
    a = ap.parse_args()
    from facepipe.stages.cluster.graph import build_index
    from facepipe.stages.cluster.metrics import evaluate_clusters
    from facepipe.stages.cluster.stage import ClusterConfig, cluster_embeddings
    from facepipe.stages.cluster.threshold import auto_threshold

    for n in a.faces:
        x, y = synthetic_faces(n)
        t = time.perf_counter()
        auto = auto_threshold(x)
        print(f"\n== {len(x)} synthetic faces of {len(set(y.tolist()))} identities: auto chose {auto.value:.4f} "
              f"(mu {auto.mu}, sigma {auto.sigma}; {time.perf_counter() - t:.1f}s)")  # fmt: skip
        base = ClusterConfig()
        index = _Memo(build_index(x, base.index))
        print("| threshold | BCubed P | R | F | merged-label errors | identities | s |")
        print("|---|---|---|---|---|---|---|")
        cuts = sorted({float(c) for c in a.thresholds.split(",")} | {auto.value})
        for cut in cuts:
            t = time.perf_counter()
            # the auto row as the stage runs it: the second pass's cut from the law too (a fixed cut: the same cut)
            lab = cluster_embeddings(x, ClusterConfig(threshold="auto" if cut == auto.value else cut), index=index)
            pred = [f"u{i}" if v < 0 else int(v) for i, v in enumerate(lab)]
            r = evaluate_clusters(pred, y.tolist())
            name = f"{cut:.4f} (auto)" if cut == auto.value else f"{cut:.2f}"
            print(
                f"| {name} | {r.bcubed_precision:.5f} | {r.bcubed_recall:.4f} | {r.bcubed_f:.4f} | "
                f"{r.merged_label_errors} | {r.n_clusters} | {time.perf_counter() - t:.0f} |"
            )


if __name__ == "__main__":
    record.run(main, "bench.accuracy.threshold_curve")
