"""Does a projection learnt from the archive itself help the identities? (issue 32: measured, not kept)

    .venv/bin/python -m bench.accuracy.archive_projection MIRRORS --portraits DIR --wild DIR --shared ../shared

A linear map W (128 -> 128, from the identity) on top of dlib's embedding, trained per archive on
the supervision the archive gives for free, no label: faces of one first-pass identity pulled
together (its precision is ~1), each face's nearest faces of other identities and the faces of
its own image pushed beyond a margin (a contrastive loss), optionally RegularFace's penalty (the
largest cosine between an identity's centroid and another's), and ``reg * |W - I|^2`` keeping it
near dlib's. The identities are then clustered again on the projected faces as the stage does
(cut chosen from them) and scored against the labels; the same-/different-person pair AUC over
random pairs checks that the pairs did not get worse. Sets: the portraits, the photos in the wild
(their benches' caches: ``portraits_set`` / ``wild_set`` ``--work`` folders) and ``cluster_real``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench import record


def train(x: np.ndarray, lab: np.ndarray, images: np.ndarray, reg: float, regularface: float) -> np.ndarray:
    """The projected faces (see the module text); 200 Adam steps, seeded."""
    import torch

    from facepipe.stages.cluster.graph import IndexConfig, build_index

    torch.manual_seed(0)
    n = len(x)
    a, b = np.triu_indices(n, 1)
    pos = np.c_[a, b][lab[a] == lab[b]]
    idx, _ = build_index(x, IndexConfig()).search(np.arange(n), 20)
    src = np.repeat(np.arange(n), idx.shape[1])
    near = (idx.ravel() >= 0) & (lab[np.maximum(idx.ravel(), 0)] != lab[src])
    neg = np.r_[np.c_[src, idx.ravel()][near][:20000], np.c_[a, b][images[a] == images[b]]]
    big = [np.flatnonzero(lab == c) for c in np.unique(lab) if (lab == c).sum() >= 2]
    X, P, N = torch.tensor(x), torch.tensor(pos), torch.tensor(neg)
    W = torch.nn.Parameter(torch.eye(x.shape[1]))
    opt = torch.optim.Adam([W], lr=1e-3)
    for _ in range(200):
        Z = X @ W
        loss = ((Z[P[:, 0]] - Z[P[:, 1]]) ** 2).sum(1).mean() if len(P) else 0.0
        loss = loss + torch.relu(0.6 - (Z[N[:, 0]] - Z[N[:, 1]]).norm(dim=1)).pow(2).mean()
        if regularface and len(big) > 1:
            C = torch.nn.functional.normalize(torch.stack([Z[torch.tensor(g)].mean(0) for g in big]), dim=1)
            loss = loss + regularface * (C @ C.T - 2 * torch.eye(len(C))).max(1).values.mean()
        loss = loss + reg * ((W - torch.eye(x.shape[1])) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (X @ W).detach().numpy().astype(np.float32)


def evaluate(name: str, x: np.ndarray, y: np.ndarray, images: np.ndarray) -> None:
    from sklearn.metrics import roc_auc_score

    from facepipe.stages.cluster.metrics import evaluate_clusters
    from facepipe.stages.cluster.stage import ClusterConfig, cluster_full

    a, b = np.triu_indices(len(x), 1)
    pick = np.random.default_rng(0).choice(len(a), min(len(a), 200_000), replace=False)
    a, b = a[pick], b[pick]
    first, _ = cluster_full(x, ClusterConfig(), image_ids=images)
    for title, reg, rf in [("dlib's embedding", None, 0), ("W, reg 1", 1.0, 0), ("W, reg 1 + RegularFace", 1.0, 1.0),
                           ("W, reg 0.1", 0.1, 0), ("W, reg 0.1 + RegularFace", 0.1, 1.0)]:  # fmt: skip
        z = x if reg is None else train(x, first, images, reg, rf)
        lab, link = cluster_full(z, ClusterConfig(), image_ids=images)
        r = evaluate_clusters([int(v) for v in lab], y.tolist())
        auc = roc_auc_score(y[a] == y[b], -np.linalg.norm(z[a] - z[b], axis=1))
        print(f"| {name} | {title} | {link.value:.3f} | {r.bcubed_precision:.4f} | {r.bcubed_recall:.4f} | "
              f"{r.bcubed_f:.4f} | {auc:.4f} |", flush=True)  # fmt: skip
        record.numbers(
            **{f"{name}: {title}": {"P": r.bcubed_precision, "R": r.bcubed_recall, "F": r.bcubed_f, "auc": auc}}
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mirrors", type=Path, help="OWNER+NAME clones, as wild_set and portraits_set take")
    ap.add_argument("--portraits", type=Path, required=True, help="portraits_set's --work folder")
    ap.add_argument("--wild", type=Path, required=True, help="wild_set's --work folder")
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    a = ap.parse_args()
    from bench.accuracy.cluster_real import real_set
    from bench.accuracy.portraits_set import portraits_set
    from bench.accuracy.wild_set import wild_set

    sets = {
        "portraits": portraits_set(a.mirrors / "mysociety+theyworkforyou" / "repo", a.portraits),
        "wild": wild_set(a.mirrors, a.wild),
        "cluster_real": real_set(a.shared),
    }
    print("| set | embedding | cut | BCubed P | R | F | pair AUC |\n|---|---|---|---|---|---|---|")
    for name, s in sets.items():
        wide = s.widths >= 40
        evaluate(name, s.x[wide], s.labels[wide], s.image_ids[wide])


if __name__ == "__main__":
    record.run(main, "bench.accuracy.archive_projection")
