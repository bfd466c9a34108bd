"""Outliers inside the training sample: does DROCC still rank them first?

    .venv/bin/python -m bench.accuracy.drocc_contaminated [--set FIELD=VALUE ...]

The scoring stage trains on the night's faces and then scores those same faces, so the outliers it
should find were trained on as "normal". Data as in tests/stages/score/test_score_stage.py: 60 images x 4
faces drawn around 10 identities (128-d, spread 0.03), and in 8 images one face moved 1.0 along
every axis. Prints the AUC of those 8 over the other 232 for 5 data seeds x 2 model seeds.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from bench import record


def data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, 128)).astype(np.float32) * 0.1
    x, y = [], []
    for i in range(60):
        emb = centres[rng.integers(0, 10, 4)] + rng.normal(size=(4, 128)).astype(np.float32) * 0.03
        if i < 8:
            emb[0] += 1.0
        x.extend(emb)
        y.extend([int(i < 8), 0, 0, 0])
    return np.array(x), np.array(y)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a DROCCConfig field (repeatable)"
    )
    a = ap.parse_args()
    from drocc_oneclass import with_overrides  # bench/ is on the path when run as a script
    from sklearn.metrics import roc_auc_score

    from facepipe.stages.score.drocc import DROCCConfig, train_drocc

    cfg = with_overrides(DROCCConfig(), a.set)
    aucs = []
    for data_seed in range(5):
        x, y = data(data_seed)
        for model_seed in range(2):
            aucs.append(roc_auc_score(y, train_drocc(x, dataclasses.replace(cfg, seed=model_seed)).anomaly_scores(x)))
    print(
        f"ascent {cfg.ascent_num_steps} x {cfg.ascent_step_size}, projected every {cfg.project_every}: AUC of "
        "the 8 far faces "
        f"mean {np.mean(aucs):.4f}, worst {min(aucs):.4f}, perfect in {sum(v == 1.0 for v in aucs)}/{len(aucs)} runs"
    )


if __name__ == "__main__":
    record.run(main, "bench.accuracy.drocc_contaminated")
