"""Other laws for linking faces and identities, measured against the stage's (issue 32: measured, not kept)

    .venv/bin/python -m bench.accuracy.link_laws --wild /tmp/wild2 --portraits /tmp/portraits --shared ../shared

The photos in the wild split people where dlib's fixed 0.5 does not (F 0.849 against 0.918): is
there a law, chosen from the archive without labels, that would link more of them without
merging the portraits' look-alikes? Three families, each on the labelled sets (the caches of
``wild_set`` / ``portraits_set``, and ``cluster_real``), faces >= 40 px as the stage clusters:

1. **The tail of the different-person distances.** The stage fits a normal law to the lower side
   of random face pairs' distances (``threshold.bulk_law``). Printed: the share of labelled
   different-person pairs under each distance, that law's, and the same law fitted to squared
   distances (a normal law of cosine similarities) -- and the cut each gives.
2. **Score normalisation** (S-norm, as in speaker verification): each face's distances put on
   its own bulk (its median and lower spread over the other faces), the two ends averaged.
   Printed: the share of same-person pairs closer than the 1st / 3rd / 5th different-person pair,
   raw against normalised (what any cut on that score could reach).
3. **Identity-level evidence** for the second pass: over pairs of first-pass identities (one of
   3+ looks), how many same-person and different-person pairs each criterion accepts at the
   budget the stage spends (``FALSE_LINKS`` per face over the pairs tested): the stage's RMS
   over all face pairs at its ``linkage_cut``; the RMS of one identity's faces to the other's
   centroid under one law pooled over all 3+-look identities; the same under each identity's own
   law (its centroid's distances to every other face).
4. **Each face its own cut** (a local false-discovery rate, 2026-12-07): a face whose nearest
   faces hold many distinct looks (``linkage.looks``' radius) under a distance ``c`` -- more than
   ``1 / q`` times the different-person neighbours the law expects there, ``N * F(c)`` -- may
   link up to ``c`` (never under the stage's cut, never over ``LINKAGE_BOUND``); a link needs
   both ends' cuts. Then the stage's second pass. Printed: BCubed per ``q``, the stage first.
5. **Other distances between two identities** (later on 2026-12-07): over pairs of first-pass
   identities (one of 3+ looks) whose closest faces are under 0.6, the stage's RMS against the
   mean distance, the modified Hausdorff distance (each face's nearest in the other identity,
   averaged; the larger of the two ways, and the smaller), the centroids' distance and the
   closest pair. Printed: the lowest different-person value per set, and how many same-person
   pairs lie under the portraits' lowest (what any cut on that distance could link without
   merging the portraits' look-alikes); then the wild set clustered by the stage with its second
   cut put just under the portraits' lowest RMS -- an oracle cut, chosen with the labels: the
   most the stage's second pass could reach there without merging a portrait.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import NormalDist

import numpy as np

from bench import record

CUTS = (0.35, 0.40, 0.45, 0.48, 0.50, 0.52, 0.55)


def _sets(args: argparse.Namespace) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from bench.accuracy.cluster_real import real_set
    from bench.accuracy.labelled_photos import load

    found = {"wild": load(args.wild / "wild.npz"), "portraits": load(args.portraits / "portraits.npz")}
    found["cluster_real"] = real_set(args.shared)
    return {k: (s.x[s.widths >= 40].astype(np.float64), s.labels[s.widths >= 40], s.image_ids[s.widths >= 40])
            for k, s in found.items()}  # fmt: skip


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


def tails(name: str, x: np.ndarray, lab: np.ndarray) -> list[str]:
    """Family 1 (module text)."""
    from facepipe.stages.cluster.threshold import PAIRS, bulk_law

    a, b = _pairs(len(x))
    d = np.linalg.norm(x[a] - x[b], axis=1)
    diff = d[lab[a] != lab[b]]
    sample = d if len(d) <= PAIRS else np.random.default_rng(0).choice(d, PAIRS, replace=False)
    mu, sg = bulk_law(sample)
    mu2, sg2 = bulk_law(sample**2)
    z = NormalDist().inv_cdf(0.005 / len(x))
    lines = [f"\n{name}: normal law of d ({mu:.4f}, {sg:.4f}) -> cut {mu + sg * z:.4f}; of d^2 ({mu2:.4f}, "
             f"{sg2:.4f}) -> cut {np.sqrt(max(mu2 + sg2 * z, 0)):.4f}",
             "| under | different-person pairs, measured | law of d | law of d^2 |", "|---|---|---|---|"]  # fmt: skip
    for c in CUTS:
        lines.append(f"| {c:.2f} | {(diff < c).mean():.1e} ({int((diff < c).sum())}) | "
                     f"{NormalDist(mu, sg).cdf(c):.1e} | {NormalDist(mu2, sg2).cdf(c * c):.1e} |")  # fmt: skip
    record.numbers(**{f"{name}: tails": {"d": [mu, sg], "d2": [mu2, sg2], "n": len(x)}})
    return lines


def snorm(name: str, x: np.ndarray, lab: np.ndarray) -> list[str]:
    """Family 2 (module text)."""
    from facepipe.stages.cluster.threshold import bulk_law

    full = np.linalg.norm(x[:, None] - x[None], axis=2)
    law = np.array([bulk_law(np.delete(full[i], i)) for i in range(len(x))])
    a, b = _pairs(len(x))
    d = full[a, b]
    scores = {"distance": d, "S-norm": ((d - law[a, 0]) / law[a, 1] + (d - law[b, 0]) / law[b, 1]) / 2}
    lines = [f"\n{name}: same-person pairs closer than the k-th different-person pair",
             "| score | k = 1 | k = 3 | k = 5 |", "|---|---|---|---|"]  # fmt: skip
    for score, v in scores.items():
        first = np.sort(v[lab[a] != lab[b]])[:5]
        shares = [float((v[lab[a] == lab[b]] < first[k]).mean()) for k in (0, 2, 4)]
        lines.append(f"| {score} | " + " | ".join(f"{s:.3f}" for s in shares) + " |")
        record.numbers(**{f"{name}: {score}": shares})
    return lines


def _identities(x: np.ndarray, lab: np.ndarray, images: np.ndarray):
    """First-pass identities: (members, majority person, looks, the first cut)."""
    from facepipe.stages.cluster.linkage import MIN_FACES, looks
    from facepipe.stages.cluster.stage import ClusterConfig, cluster_full

    labels, link = cluster_full(x.astype(np.float32), ClusterConfig(second_pass=False), image_ids=images)
    members = [np.flatnonzero(labels == g) for g in np.unique(labels[labels >= 0])]
    person = np.array([max(set(lab[m].tolist()), key=lambda p: ((lab[m] == p).sum(), p)) for m in members])
    seen = np.array([int(looks(x[m], np.array([0]), link.value / 2, MIN_FACES)[0]) for m in members])
    return labels, members, person, seen, link


def identity_pairs(name: str, x: np.ndarray, lab: np.ndarray, images: np.ndarray) -> list[str]:
    """Family 3 (module text): accepted (same, different) pairs of first-pass identities."""
    from facepipe.stages.cluster.linkage import MIN_FACES
    from facepipe.stages.cluster.threshold import FALSE_LINKS, bulk_law, linkage_cut

    labels, members, person, seen, link = _identities(x, lab, images)
    big = np.flatnonzero(seen >= MIN_FACES)
    z = NormalDist().inv_cdf(min(0.5, FALSE_LINKS * len(x) / 2 / max(1, len(big) * len(members))))
    rms_cut = linkage_cut(link, labels, MIN_FACES)
    rows: dict[str, list[int]] = {"RMS over face pairs (the stage)": [0, 0], "RMS to the centroid, pooled law": [0, 0],
                                  "RMS to the centroid, the identity's own law": [0, 0]}  # fmt: skip
    own, pooled, far = [], [], []
    for g in big:
        d = np.linalg.norm(x - x[members[g]].mean(0), axis=1)
        outside = np.ones(len(x), bool)
        outside[members[g]] = False
        own.append(bulk_law(d[outside]))
        pooled.append(d[outside])
        far.append(d)
    mu, sg = bulk_law(np.concatenate(pooled)) if pooled else (0.0, 1.0)
    for i, g in enumerate(big):
        for h in range(len(members)):
            if h == g:
                continue
            same = int(person[g] != person[h])  # 0: same person, 1: different
            r = float(np.sqrt(np.mean(far[i][members[h]] ** 2)))
            rows["RMS to the centroid, pooled law"][same] += r < mu + sg * z
            rows["RMS to the centroid, the identity's own law"][same] += r < own[i][0] + own[i][1] * z
            if h not in big or h > g:  # unordered, once
                rms = np.sqrt(np.mean(np.linalg.norm(x[members[g]][:, None] - x[members[h]][None], axis=2) ** 2))
                rows["RMS over face pairs (the stage)"][same] += rms < rms_cut
    truth = sum(person[g] == person[h] for g in big for h in range(len(members)) if h != g)
    lines = [f"\n{name}: {len(members)} first-pass identities (cut {link.value}), {len(big)} of 3+ looks; "
             f"{truth} (3+-look identity, other identity) pairs are one person; z at the budget {z:.2f}, "
             f"RMS cut {rms_cut}, pooled law ({mu:.4f}, {sg:.4f})",
             "| criterion | same-person pairs accepted | different-person pairs accepted |",
             "|---|---|---|"]  # fmt: skip
    lines += [f"| {k} | {v[0]} | {v[1]} |" for k, v in rows.items()]
    record.numbers(**{f"{name}: identity pairs": rows, f"{name}: same-person pairs": int(truth)})
    return lines


def _face_cuts(xc: np.ndarray, idx: np.ndarray, dist: np.ndarray, link, q: float) -> np.ndarray:
    """Family 4: each face's cut -- the largest ``c`` with ``N * F(c) <= q * looks under c``."""
    from facepipe.stages.cluster.threshold import LINKAGE_BOUND

    grid = np.round(np.arange(link.value, LINKAGE_BOUND + 1e-9, 0.005), 4)
    expected = len(xc) * np.array([NormalDist(link.mu, link.sigma).cdf(c) for c in grid])
    cuts = np.full(len(xc), link.value)
    for i in range(len(xc)):
        picked, near = [xc[i]], []
        for j, d in zip(idx[i], dist[i]):
            if j >= 0 and d <= grid[-1] and min(np.linalg.norm(xc[j] - p) for p in picked) >= link.value / 2:
                picked.append(xc[j])
                near.append(d)
        ok = expected <= q * (np.asarray(near)[:, None] < grid[None]).sum(0)
        cuts[i] = max(cuts[i], grid[ok].max(initial=0.0))
    return cuts


def local_cuts(name: str, x: np.ndarray, lab: np.ndarray, images: np.ndarray, qs=(0.01, 0.05, 0.1)) -> list[str]:
    """Family 4 (module text): BCubed of the stage, then of each face its own cut, per ``q``."""
    from facepipe.stages.cluster.constraints import cannot_link, canonical_order, drop_small, split_same_image
    from facepipe.stages.cluster.graph import build_index
    from facepipe.stages.cluster.linkage import MIN_FACES, merge_by_linkage
    from facepipe.stages.cluster.methods import chinese_whispers, threshold_edges
    from facepipe.stages.cluster.metrics import evaluate_clusters
    from facepipe.stages.cluster.stage import ClusterConfig
    from facepipe.stages.cluster.threshold import auto_threshold, linkage_cut

    cfg, n = ClusterConfig(), len(x)
    link, order = auto_threshold(x.astype(np.float32)), canonical_order(x)
    xc, ids, truth = x[order], images[order], lab[order].tolist()
    idx, dist = build_index(xc.astype(np.float32), cfg.index).search(np.arange(n), min(cfg.k, n - 1))
    dist = cannot_link(idx, dist, np.arange(n), ids)
    lines = [f"\n{name}: each face its own cut (stage's cut {link.value})", "| q | median / max cut | P | R | F |"]
    lines += ["|---|---|---|---|---|"]
    for q in (0.0, *qs):
        cuts = _face_cuts(xc, idx, dist, link, q) if q else np.full(n, link.value)
        both = np.minimum(cuts[:, None], cuts[np.maximum(idx, 0)])
        labels = chinese_whispers(idx, np.where(dist < both, dist, np.inf), np.inf, seed=cfg.seed)
        cut2 = linkage_cut(link, labels, MIN_FACES)
        labels = merge_by_linkage(xc, labels, *threshold_edges(idx, dist, cut2), cut2, ids, distinct=link.value / 2)
        labels = drop_small(split_same_image(labels, xc, ids, np.ones(n, bool)), cfg.min_faces)
        r = evaluate_clusters([f"u{i}" if v < 0 else int(v) for i, v in enumerate(labels)], truth)
        row = f"{q or 'the stage'} | {np.median(cuts):.3f} / {cuts.max():.3f} | {r.bcubed_precision:.4f}"
        lines.append(f"| {row} | {r.bcubed_recall:.4f} | {r.bcubed_f:.4f} |")
        record.numbers(**{f"{name}: own cuts, q {q}": [r.bcubed_precision, r.bcubed_recall, r.bcubed_f]})
    return lines


SET_DISTANCES = ("RMS (the stage)", "mean", "modified Hausdorff, larger way", "modified Hausdorff, smaller way",
                 "centroids", "closest pair")  # fmt: skip


def _set_distances(a: np.ndarray, b: np.ndarray) -> list[float]:
    d = np.linalg.norm(a[:, None] - b[None], axis=2)
    near = (float(d.min(1).mean()), float(d.min(0).mean()))
    centroids = float(np.linalg.norm(a.mean(0) - b.mean(0)))
    return [float(np.sqrt((d**2).mean())), float(d.mean()), max(near), min(near), centroids, float(d.min())]


def set_distances(name: str, x: np.ndarray, lab: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray]:
    """Family 5 (module text): (same-person values, different-person values) per distance."""
    from facepipe.stages.cluster.linkage import MIN_FACES

    _, members, person, seen, _ = _identities(x, lab, images)
    big = set(np.flatnonzero(seen >= MIN_FACES).tolist())
    same, diff = [], []
    for g in sorted(big):
        for h in range(len(members)):
            if h != g and not (h in big and h < g):
                v = _set_distances(x[members[g]], x[members[h]])
                if v[-1] < 0.6:
                    (same if person[g] == person[h] else diff).append(v)
    return {"same": np.array(same).reshape(-1, 6), "different": np.array(diff).reshape(-1, 6)}


def set_distance_table(found: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """Family 5's table: per distance, each set's lowest different-person value, and the same-person
    pairs of each set under the portraits' lowest."""
    floor = found["portraits"]["different"].min(0)
    lines = ["\nOther distances between identities: lowest different-person value per set; same-person "
             "pairs (of all near ones) under the portraits' lowest",
             "| distance | " + " | ".join(f"{k}: lowest different | {k}: same under" for k in found) + " |",
             "|---|" + "---|---|" * len(found)]  # fmt: skip
    for i, what in enumerate(SET_DISTANCES):
        cells = []
        for k, v in found.items():
            low = v["different"][:, i].min() if len(v["different"]) else float("nan")
            cells += [f"{low:.3f}", f"{int((v['same'][:, i] < floor[i]).sum())} of {len(v['same'])}"]
            record.numbers(**{f"{k}: {what}, lowest different": float(low)})
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return lines


def oracle_second_cut(x: np.ndarray, lab: np.ndarray, images: np.ndarray, cut: float) -> list[str]:
    """Family 5's last line: BCubed of the stage with its second pass's cut set to ``cut``."""
    from unittest import mock

    from facepipe.stages.cluster import stage
    from facepipe.stages.cluster.metrics import evaluate_clusters

    with mock.patch.object(stage, "linkage_cut", lambda *a, **k: cut):  # the stage's law replaced by the oracle
        labels, _ = stage.cluster_full(x.astype(np.float32), stage.ClusterConfig(), image_ids=images)
    r = evaluate_clusters([f"u{i}" if v < 0 else int(v) for i, v in enumerate(labels)], lab.tolist())
    record.numbers(**{f"wild, second cut {cut}": [r.bcubed_precision, r.bcubed_recall, r.bcubed_f]})
    return [
        f"\nwild, the stage with its second cut at {cut} (oracle: under the portraits' lowest different-person "
        f"RMS): P {r.bcubed_precision:.4f} R {r.bcubed_recall:.4f} F {r.bcubed_f:.4f}"
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wild", type=Path, required=True, help="wild_set's --work folder")
    ap.add_argument("--portraits", type=Path, required=True, help="portraits_set's --work folder")
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--only", choices=("set-distances",), help="print only that family")
    args = ap.parse_args()
    found, sets = {}, _sets(args)
    for name, (x, lab, images) in sets.items():
        if not args.only:
            lines = tails(name, x, lab) + snorm(name, x, lab) + identity_pairs(name, x, lab, images)
            print("\n".join(lines + local_cuts(name, x, lab, images)), flush=True)
        found[name] = set_distances(name, x, lab, images)
    floor = float(np.floor(found["portraits"]["different"][:, 0].min() * 1000) / 1000)
    print("\n".join(set_distance_table(found) + oracle_second_cut(*sets["wild"], floor)))


if __name__ == "__main__":
    record.run(main, "bench.accuracy.link_laws")
