"""DROCC against the usual one-class baselines on datasets that ship with scikit-learn.

    .venv/bin/python -m bench.accuracy.drocc_oneclass [--quick] [--seeds N | --splits N] [--set FIELD=VALUE ...]

Protocols (AUC of "is an outlier", higher = better; seeds fixed):
- digits: for each digit d, train on d's half of a stratified 50/50 split, test on the whole other
  half (d = normal, every other digit = outlier); mean over the 10 digits.
- breast_cancer: benign is normal; train on half of the benign, test on the other half + all malignant.
- wine: each class in turn is normal (train on its half, test on the other half of everything); mean.

Side by side: DROCC (facepipe.stages.score.drocc, default config), DROCC-LF, scikit-learn's OneClassSVM
(RBF, nu 0.1) and IsolationForest, and the ablation "noise negatives": the same network and loss
with negatives drawn at random on the same shell, no adversarial ascent.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from bench import record


def tasks(seed: int = 0):
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine
    from sklearn.model_selection import train_test_split

    for name, loader, normal_classes in (("digits", load_digits, range(10)), ("wine", load_wine, range(3))):
        X, y = loader(return_X_y=True)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, stratify=y, random_state=seed)
        for c in normal_classes:
            yield name, Xtr[ytr == c], Xte, (yte != c).astype(int)
    X, y = load_breast_cancer(return_X_y=True)  # target 1 = benign
    ben, mal = X[y == 1], X[y == 0]
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(ben))
    half = len(ben) // 2
    yield (
        "breast_cancer",
        ben[idx[:half]],
        np.concatenate([ben[idx[half:]], mal]),
        np.r_[np.zeros(len(ben) - half, int), np.ones(len(mal), int)],
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--quick", action="store_true", help="15 epochs, not 30 (smoke run; fewer leaves the models inverted)"
    )
    ap.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a DROCCConfig field (repeatable)"
    )
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train the networks (and IsolationForest) with seeds 0..N-1; print the mean and, for N > 1, "
        "the standard deviation of the per-seed dataset means (one seed's differences of 0.003 are noise)",
    )
    ap.add_argument(
        "--splits",
        type=int,
        default=0,
        help="run i uses data split i (the 50/50 train/test draw) and model seed i, for i in 0..N-1: "
        "the baselines vary too, and every split's means are printed side by side",
    )
    a = ap.parse_args()
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score
    from sklearn.svm import OneClassSVM

    from facepipe.stages.score.drocc import DROCCConfig, train_drocc

    base = DROCCConfig(epochs=15 if a.quick else DROCCConfig.epochs)
    base = with_overrides(base, a.set)
    print(f"DROCC config: {base}")
    methods = {
        "DROCC": lambda Xtr, seed: train_drocc(Xtr, dataclasses.replace(base, seed=base.seed + seed)).anomaly_scores,
        "DROCC-LF": lambda Xtr, seed: (
            train_drocc(Xtr, dataclasses.replace(base, lf=True, seed=base.seed + seed)).anomaly_scores
        ),
        "noise negatives": lambda Xtr, seed: (
            train_drocc(Xtr, dataclasses.replace(base, ascent_num_steps=0, seed=base.seed + seed)).anomaly_scores
        ),
        "OneClassSVM": None,
        "IsolationForest": None,
    }
    t0 = time.perf_counter()
    runs = [(i, i) for i in range(a.splits)] if a.splits else [(seed, 0) for seed in range(a.seeds)]
    per_seed = [_run(methods, seed, split, roc_auc_score, OneClassSVM, IsolationForest) for seed, split in runs]
    over = f", then over {a.splits} splits" if a.splits else f", then over {a.seeds} seeds" if a.seeds > 1 else ""
    print(f"one-class AUC (mean over normal classes{over}), {time.perf_counter() - t0:.0f}s")
    print(f"{'dataset':15s}" + "".join(f"{m:>17s}" for m in methods))
    for name in per_seed[0]:
        vals = {m: [r[name][m] for r in per_seed] for m in methods}
        print(f"{name:15s}" + "".join(f"{_fmt(vals[m]):>17s}" for m in methods))
    print(
        f"{'mean':15s}"
        + "".join(f"{_fmt([float(np.mean([r[n][m] for n in r])) for r in per_seed]):>17s}" for m in methods)
    )
    if a.splits:
        print(
            "mean per split: "
            + "; ".join(f"{m} " + " ".join(f"{np.mean([r[n][m] for n in r]):.3f}" for r in per_seed) for m in methods)
        )


def with_overrides(cfg, pairs: list[str]):
    """``cfg`` with ``FIELD=VALUE`` pairs applied, each value parsed as the field's current type
    (a ``None`` field as float; booleans from true/false/1/0)."""
    for kv in pairs:
        k, v = kv.split("=", 1)
        cur = getattr(cfg, k)
        cfg = dataclasses.replace(
            cfg,
            **{
                k: v.lower() in ("1", "true", "yes")
                if isinstance(cur, bool)
                else type(cur if cur is not None else 0.0)(v)
            },
        )
    return cfg


def _fmt(v: list[float]) -> str:
    return f"{np.mean(v):.3f}" + (f" ±{np.std(v):.3f}" if len(v) > 1 else "")


def _run(methods, seed: int, split: int, roc_auc_score, OneClassSVM, IsolationForest) -> dict[str, dict[str, float]]:
    """dataset -> method -> AUC (mean over the dataset's normal classes) for one model seed and data split."""
    results: dict[str, dict[str, list[float]]] = {}
    for name, Xtr, Xte, yte in tasks(split):
        mu, sd = Xtr.mean(0), Xtr.std(0)
        sd = np.where(sd > 1e-6, sd, 1.0)
        for m, fit in methods.items():
            if m == "OneClassSVM":
                clf = OneClassSVM(kernel="rbf", gamma="scale", nu=0.1).fit((Xtr - mu) / sd)
                score = -clf.decision_function((Xte - mu) / sd)
            elif m == "IsolationForest":
                clf = IsolationForest(random_state=seed).fit((Xtr - mu) / sd)
                score = -clf.decision_function((Xte - mu) / sd)
            else:
                score = fit(Xtr.astype(np.float32), seed)(Xte.astype(np.float32))
            results.setdefault(name, {}).setdefault(m, []).append(roc_auc_score(yte, score))
    return {name: {m: float(np.mean(v)) for m, v in per.items()} for name, per in results.items()}


if __name__ == "__main__":
    record.run(main, "bench.accuracy.drocc_oneclass")
