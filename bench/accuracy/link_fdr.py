"""The first cut from a false-discovery rate (issue 32; in the stage since 2026-12-08:
``facepipe.stages.cluster.fdr``, FDR 0.01 on the k-NN graph, capped at 0.52, copies left out)

    .venv/bin/python -m bench.accuracy.link_fdr --wild /tmp/wild2 --portraits /tmp/portraits --shared ../shared
    .venv/bin/python -m bench.accuracy.link_fdr --wild /tmp/wild2 --portraits /tmp/portraits --shared ../shared --mixed

Below, "the stage's cut" is the law's (``threshold.auto_threshold``), and each rule's cut is given
to the stage as a number. ``--mixed`` runs the stage itself, its defaults against
``--cluster-fdr 0``, on each set and on archives that mix them.

The law's cut lies where the law of different-person distances (``threshold.bulk_law``, fitted to
random pairs) expects a fixed budget of chance links per face. That budget cannot serve both
the wild set (28 people photographed many times: F needs a cut near 0.5) and the portraits
(1,758 people: precision needs <= 0.40). What differs between them is how many of the pairs
near a cut are the same person -- which a false-discovery rate sees: with ``N`` pairs, the law
expects ``N * (F(c) - F(c - h))`` different-person pairs in the window ``[c - h, c)`` and the
archive shows some number there; their ratio is the local false-discovery rate (Efron's lfdr) at
``c``, and ``N * F(c)`` over the pairs under ``c`` is the global one (Benjamini-Hochberg's FDR).
Each cut: the largest ``c`` (from the stage's cut up, on a 0.005 grid) under which every step keeps
the rate <= ``q``; then the stage with that cut (its second pass at the same cut). Printed per set
and ``q``: the cut and BCubed P / R / F (all pairs counted: the sets are small). ``--looks``: the
rates counted over distinct looks only (faces at least half the stage's cut from every face kept
before them, in the canonical order): ten re-encodings of one photo are one look.

``--knn --cap C [--synthetic N]``: the FDR as the stage could count it at any scale -- the pairs
under a cut taken from its k-NN graph (k = 20: an undercount, so a rate never below the true one),
the cut never above ``C`` -- on the real sets and on N synthetic faces (``threshold_curve``'s:
look-alikes drawn 0.50-0.65 apart, where the issue asks precision >= 0.9999).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path
from statistics import NormalDist

import numpy as np

from bench import record

GRID = np.round(np.arange(0.35, 0.6001, 0.005), 3)
WINDOW = 0.03
QS = (0.01, 0.02, 0.05)


def rates(d: np.ndarray, mu: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(FDR, lfdr) at each cut of :data:`GRID` for the pair distances ``d`` under the law (mu, sigma)."""
    law = NormalDist(mu, sigma)
    cdf = np.array([law.cdf(c) for c in GRID])
    below = np.array([law.cdf(c - WINDOW) for c in GRID])
    d = np.sort(d)
    under = np.searchsorted(d, GRID)
    window = under - np.searchsorted(d, GRID - WINDOW)
    return len(d) * cdf / np.maximum(under, 1), len(d) * (cdf - below) / np.maximum(window, 1)


def largest_cut(start: float, rate: np.ndarray, q: float) -> float:
    """The largest grid cut from ``start`` up with the rate <= ``q`` at it and every step below it."""
    cut = start
    for c, r in zip(GRID, rate):
        if c < start:
            continue
        if r > q:
            break
        cut = float(c)
    return cut


def looks(x: np.ndarray, radius: float) -> np.ndarray:
    """Rows of ``x`` at least ``radius`` from every row kept before them, in the canonical order."""
    from facepipe.stages.cluster.constraints import canonical_order

    kept: list[int] = []
    for k in canonical_order(x):
        if not kept or np.linalg.norm(x[kept] - x[k], axis=1).min() >= radius:
            kept.append(int(k))
    return np.array(kept)


def one_set(name: str, x: np.ndarray, lab: np.ndarray, images: np.ndarray, distinct: bool = False) -> list[str]:
    from facepipe.stages.cluster.metrics import evaluate_clusters
    from facepipe.stages.cluster.stage import ClusterConfig, cluster_full
    from facepipe.stages.cluster.threshold import auto_threshold

    link = auto_threshold(x.astype(np.float32))
    xs = x[looks(x, link.value / 2)] if distinct else x
    i, j = np.triu_indices(len(xs), 1)
    d = np.concatenate(
        [np.linalg.norm(xs[i[s : s + 10**6]] - xs[j[s : s + 10**6]], axis=1) for s in range(0, len(i), 10**6)]
    )
    fdr, lfdr = rates(d, link.mu, link.sigma)
    lines = [f"\n{name}: {len(x)} faces ({len(xs)} counted), {len(d)} pairs, the stage's cut {link.value}",
             "| rate | q | cut | P | R | F |", "|---|---|---|---|---|---|"]  # fmt: skip
    for kind, rate in (("FDR", fdr), ("lfdr", lfdr)):
        for q in QS:
            cut = largest_cut(link.value, rate, q)
            labels, _ = cluster_full(x.astype(np.float32), ClusterConfig(threshold=cut), image_ids=images)
            r = evaluate_clusters([f"u{k}" if v < 0 else int(v) for k, v in enumerate(labels)], lab.tolist())
            lines.append(
                f"| {kind} | {q} | {cut:.3f} | {r.bcubed_precision:.4f} | {r.bcubed_recall:.4f} | {r.bcubed_f:.4f} |"
            )
            record.numbers(**{f"{name}: {kind} {q}": [cut, r.bcubed_precision, r.bcubed_recall, r.bcubed_f]})
    return lines


def knn_fdr(x: np.ndarray, mu: float, sigma: float, k: int = 20) -> np.ndarray:
    """The FDR at each cut of :data:`GRID`, the pairs under it counted on the k-NN graph."""
    from facepipe.stages.cluster.fdr import graph_pairs
    from facepipe.stages.cluster.graph import build_index
    from facepipe.stages.cluster.stage import ClusterConfig

    n = len(x)
    idx, dist = build_index(x, ClusterConfig().index).search(np.arange(n), min(k, n - 1))
    under = np.searchsorted(graph_pairs(idx, dist, np.inf), GRID)  # each unordered pair once
    law = NormalDist(mu, sigma)
    return n * (n - 1) / 2 * np.array([law.cdf(c) for c in GRID]) / np.maximum(under, 1)


def knn_line(name: str, x: np.ndarray, lab: list, images: np.ndarray | None, cap: float, q: float = 0.01) -> str:
    """``--knn``: one set's row (the stage's cut, the FDR cut, BCubed there)."""
    from facepipe.stages.cluster.metrics import evaluate_clusters
    from facepipe.stages.cluster.stage import ClusterConfig, cluster_full
    from facepipe.stages.cluster.threshold import auto_threshold

    x = x.astype(np.float32)
    link = auto_threshold(x)
    cut = min(largest_cut(link.value, knn_fdr(x, link.mu, link.sigma), q), cap)
    labels, _ = cluster_full(x, ClusterConfig(threshold=cut), image_ids=images)
    r = evaluate_clusters([f"u{k}" if v < 0 else int(v) for k, v in enumerate(labels)], lab)
    record.numbers(**{f"{name}: knn FDR {q}, cap {cap}": [cut, r.bcubed_precision, r.bcubed_recall, r.bcubed_f]})
    scores = f"{r.bcubed_precision:.5f} | {r.bcubed_recall:.4f} | {r.bcubed_f:.4f}"
    return f"| {name} | {len(x)} | {link.value} | {cut:.3f} | {scores} |"


MIXES = (("wild",), ("portraits",), ("cluster_real",), ("wild", "portraits"), ("cluster_real", "portraits"),
         ("wild", "cluster_real", "portraits"))  # fmt: skip


def regional_cuts(x: np.ndarray, spec: str) -> np.ndarray:
    """Each face's cut from a regional law: every face's own bulk law (``bulk_law`` over its
    distances to every other face, or with ``sM`` in ``spec`` to M reference faces taken evenly
    through the content order), averaged with its K nearest faces' laws (``spec`` "K") or smoothed
    H times over the stage's 20-NN graph (``hH``: each face the mean of itself and its
    neighbours), cut at the stage's budget (``FALSE_LINKS`` per face among the N), within the
    stage's bounds. "50": exact, 50 faces; "s1000h2": what a stage could do at any scale."""
    import re

    from facepipe.stages.cluster.graph import build_index
    from facepipe.stages.cluster.stage import ClusterConfig
    from facepipe.stages.cluster.threshold import BOUNDS, FALSE_LINKS, bulk_law, content_order

    parts = re.fullmatch(r"(?:s(\d+))?(?:h(\d+))?", "" if spec.isdigit() else spec)
    sample, hops = (int(v) if v else 0 for v in parts.groups())
    n = len(x)
    ref = content_order(x)[:: max(1, n // sample)][:sample] if sample else np.arange(n)
    d = np.sqrt(np.maximum(((x[:, None, :] - x[ref][None]) ** 2).sum(-1), 0))
    d[ref, np.arange(len(ref))] = np.inf  # a face is not its own reference
    laws = np.array([bulk_law(row[np.isfinite(row)]) for row in d])
    if spec.isdigit():
        near = np.argsort(d, axis=1)[:, : int(spec)]
        laws = (laws + laws[near].sum(1)) / (int(spec) + 1)
    else:
        idx, _ = build_index(x, ClusterConfig().index).search(np.arange(n), min(20, n - 1))
        for _ in range(hops):
            laws = (laws + laws[idx].sum(1)) / (idx.shape[1] + 1)
    mu, sigma = laws.T
    return np.clip(mu + sigma * NormalDist().inv_cdf(min(0.5, FALSE_LINKS / n)), *BOUNDS)


def regional(x: np.ndarray, images: np.ndarray, k: str) -> tuple[np.ndarray, str]:
    """The stage with every link also under both its faces' cuts: the larger of each face's
    regional cut (:func:`regional_cuts`) and the stage's own (raised) cut. Patched in here, not in
    the stage; the first pass and the second pass's floor at the largest of the faces' cuts."""
    from unittest import mock

    import facepipe.stages.cluster.stage as stage
    from facepipe.stages.cluster.constraints import canonical_order

    raised = stage.cluster_full(x, stage.ClusterConfig(), image_ids=images)[1]
    cuts = np.maximum(regional_cuts(x, k), raised.value)
    c = cuts[canonical_order(x)]  # the stage's rows

    def linked(idx, dist, rows, ids, _cut=stage.cannot_link):
        d = _cut(idx, dist, rows, ids)
        return np.where(d < np.minimum(c[:, None], np.where(idx >= 0, c[np.maximum(idx, 0)], 0)), d, np.inf)

    link = dataclasses.replace(raised, value=float(cuts.max()), law=None)
    with mock.patch.object(stage, "cannot_link", linked):
        labels, _ = stage.cluster_full(x, stage.ClusterConfig(fdr=0), image_ids=images, link=link)
    return labels, "each face's, 10% / 50% / 90%: " + " / ".join(f"{v:.3f}" for v in np.quantile(cuts, [0.1, 0.5, 0.9]))


def mixed_lines(sets: dict, regions: tuple[str, ...] = ()) -> list[str]:
    """``--mixed``: the stage itself (``cluster_full``, defaults against ``--cluster-fdr 0``) on each
    set and on archives that mix them, BCubed over the whole archive and over each part;
    ``--regional SPEC,...``: also :func:`regional` with each ``SPEC`` (:func:`regional_cuts`)."""
    from facepipe.stages.cluster.metrics import evaluate_clusters
    from facepipe.stages.cluster.stage import ClusterConfig, cluster_full

    def stage(fdr: float):
        def run(x, images):
            labels, link = cluster_full(x, ClusterConfig(fdr=fdr), image_ids=images)
            return labels, f"{link.value} ({link.law or link.value})"

        return run

    variants = {"--cluster-fdr 0": stage(0.0), "defaults": stage(0.01)}
    variants |= {f"regional law, {k}": functools.partial(regional, k=k) for k in regions}
    lines = ["| archive | clustering | cut (the law's) | all: P / R / F | each part: P / R / F |",
             "|---|---|---|---|---|"]  # fmt: skip
    print("\n".join(lines), flush=True)
    for names in MIXES:
        x = np.concatenate([sets[n][0] for n in names]).astype(np.float32)
        part = np.concatenate([[n] * len(sets[n][0]) for n in names])
        lab = [f"{n}:{v}" for n in names for v in sets[n][1]]
        images = np.array([f"{n}:{v}" for n in names for v in sets[n][2]], object)
        for title, run in variants.items():
            labels, cut = run(x, images)
            pred = [f"u{k}" if v < 0 else int(v) for k, v in enumerate(labels)]
            scores = {}
            for n in ("all", *names):
                keep = [i for i in range(len(x)) if n in ("all", part[i])]
                r = evaluate_clusters([pred[i] for i in keep], [lab[i] for i in keep])
                scores[n] = [r.bcubed_precision, r.bcubed_recall, r.bcubed_f]
            record.numbers(**{f"mixed {'+'.join(names)}: {title}": {"cut": cut, **scores}})
            show = {n: " / ".join(f"{v:.4f}" for v in scores[n]) for n in scores}
            each = "; ".join(f"{n} {show[n]}" for n in names) if len(names) > 1 else "--"
            lines.append(f"| {' + '.join(names)} | {title} | {cut} | {show['all']} | {each} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    from bench.accuracy.link_laws import _sets

    ap = argparse.ArgumentParser()
    ap.add_argument("--wild", type=Path, required=True, help="wild_set's --work folder")
    ap.add_argument("--portraits", type=Path, required=True, help="portraits_set's --work folder")
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--looks", action="store_true", help="count the rates over distinct looks only")
    ap.add_argument("--knn", action="store_true", help="FDR 0.01 counted on the k-NN graph, the cut capped")
    ap.add_argument("--cap", type=float, default=0.55, help="with --knn: the largest cut")
    ap.add_argument("--synthetic", type=int, default=0, help="with --knn: also this many synthetic faces")
    ap.add_argument("--mixed", action="store_true", help="the stage's defaults on each set and on mixtures of them")
    ap.add_argument(
        "--regional", default="", help="with --mixed: also regional laws, e.g. 20,50,s1000h2 (regional_cuts)"
    )
    args = ap.parse_args()
    if args.mixed:
        mixed_lines(_sets(args), tuple(k for k in args.regional.split(",") if k))
        return
    if args.knn:
        print("| set | faces | the stage's cut | FDR cut | P | R | F |\n|---|---|---|---|---|---|---|")
    for name, (x, lab, images) in _sets(args).items():
        row = knn_line(name, x, lab.tolist(), images, args.cap) if args.knn else None
        print(row or "\n".join(one_set(name, x, lab, images, args.looks)), flush=True)
    if args.knn and args.synthetic:
        from bench.accuracy.threshold_curve import synthetic_faces

        x, truth = synthetic_faces(args.synthetic)
        print(knn_line("synthetic", x, truth.tolist(), None, args.cap), flush=True)


if __name__ == "__main__":
    import sys

    mode = ".knn" if "--knn" in sys.argv else ".mixed" if "--mixed" in sys.argv else ""
    record.run(main, "bench.accuracy.link_fdr" + mode)  # its own record
