"""Outlier scoring on real detections: does the score stage flag non-faces and keep faces?

    .venv/bin/python -m bench.accuracy.outlier_scores --archive /tmp/benchA --shared ../shared [--chip-cnn]

The evaluation set is ``bench/data/outlier_eval.json`` (``bench/accuracy/outlier_eval.py``: 1248 detections
of the 1 MB RetinaFace at score 0.3 on photos that ship offline, labelled face / non-face by rule
and by hand). Each detection goes through the job's own align path (decode at full resolution,
shape predictor from the box, dlib chip, ``facepipe.stages.align.quality``), then the score stage's pure
functions train on the confident faces (``score.outliers.confident``) -- **no label is used to
train or to pick the threshold** -- and score every detection, as ``facepipe run`` does.

Prints, for the stage's model and the alternatives on the same inputs and training sample:
ROC AUC of "non-face" (all detections; those the default ``--score-threshold 0.5`` keeps), the
share of non-faces and of faces flagged at the default threshold, training contamination and what
it does, and the precision of the pasted-face archive's detections at recall parity before and
after dropping the flagged ones. ``--chip-cnn`` adds DROCC with a small CNN on the aligned chips
(the design the issue proposed first; slow: about a minute per model on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from bench import record


def bench_archive():
    """The pasted-face archive's builder (testbed.pasted)."""
    from testbed import pasted

    return pasted


def job_features(archive: Path, shared: Path) -> dict[str, np.ndarray]:
    """Every evaluation detection through the job's align path: quality features, chips, embeddings."""
    from bench.accuracy import outlier_eval as oe
    from facepipe.registry import create_model
    from facepipe.stages.align.stage import align_batch
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.stages.score.onet import square_crops

    dets = oe.load()
    sp = create_model("dlib_shape_predictor_5", kind="landmarks")
    net = create_model("dlib_resnet", kind="embedder")
    verifier = create_model("mtcnn_onet", kind="verifier")
    by_source: dict[str, list[int]] = {}
    for i, d in enumerate(dets):
        by_source.setdefault(d.source, []).append(i)
    quality, chips = np.zeros((len(dets), 13), np.float32), np.zeros((len(dets), 32, 32), np.float32)
    emb = np.zeros((len(dets), 128), np.float32)
    for source, idx in by_source.items():
        image = decode_image(oe.load_image(source, archive, shared), DecodeConfig(long_side=0)).pixels
        boxes = np.asarray([dets[i].box for i in idx], np.float32)
        lms = np.asarray([dets[i].landmarks for i in idx], np.float32).reshape(-1, 5, 2)
        c, q = align_batch([image], [boxes], [lms], net.chip, "dlib_sp5", sp)
        quality[idx] = np.c_[q, verifier.face_logits(square_crops(image, boxes))]  # as the model actors do
        emb[idx] = net.embed(c)
        chips[idx] = [_grey32(x) for x in c]
    return {
        "quality": quality,
        "chips": chips,
        "embedding": emb,
        "det_score": np.asarray([d.det_score for d in dets], np.float32),
        "width": np.asarray([d.box[2] - d.box[0] for d in dets], np.float32),
        "label": np.asarray([d.label for d in dets]),
        "source": np.asarray([d.source for d in dets]),
    }


def _grey32(chip: np.ndarray) -> np.ndarray:
    import cv2

    g = cv2.resize(cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (g - g.mean()) / (g.std() + 1e-3)  # contrast-normalised


@dataclasses.dataclass
class Row:
    name: str
    auc: float
    auc_kept: float
    nonfaces_flagged: float | None = None
    faces_flagged: float | None = None


def evaluate(scores: np.ndarray, threshold: float | None, y: np.ndarray, keep: np.ndarray, det: np.ndarray, name: str):
    from sklearn.metrics import roc_auc_score

    kept = keep & (det >= 0.5)
    row = Row(name, roc_auc_score(y[keep], scores[keep]), roc_auc_score(y[kept], scores[kept]))
    if threshold is not None:
        row.nonfaces_flagged = float((scores[keep & (y == 1)] > threshold).mean())
        row.faces_flagged = float((scores[keep & (y == 0)] > threshold).mean())
    return row


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def main() -> dict[str, Row]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archive", default="/tmp/benchA", help="the pasted-face archive (testbed/pasted.py, seed 0)")
    ap.add_argument("--shared", default=os.environ.get("FACEPIPE_SHARED", "../shared"))
    ap.add_argument("--chip-cnn", action="store_true")
    a = ap.parse_args()
    return run(Path(a.archive), Path(a.shared), a.chip_cnn)


def run(archive: Path, shared: Path, chip_cnn: bool = False) -> dict[str, Row]:
    import pyarrow as pa
    import torch
    from sklearn.ensemble import IsolationForest
    from sklearn.svm import OneClassSVM

    from facepipe.stages.score.detail import detail_terms
    from facepipe.stages.score.drocc import train_drocc
    from facepipe.stages.score.stage import DROCC_INPUTS, ScoreConfig, confident, face_features, fit, outlier_scores

    torch.set_num_threads(2)
    if not (archive / "truth.json").exists():
        bench_archive().build(archive, 120, 0)
    t0 = time.perf_counter()
    f = job_features(archive, shared)
    t_feat = time.perf_counter() - t0
    q, det, label = f["quality"], f["det_score"], f["label"]
    x = face_features(
        pa.table(
            {
                "landmark_offsets": pa.FixedSizeListArray.from_arrays(pa.array(q[:, :10].reshape(-1)), 10),
                "sharpness": q[:, 10],
                "face_logit": q[:, 12],
                "det_score": det,
            }
        )
    )
    keep, y = label != "partial", (label == "nonface").astype(int)
    cfg = ScoreConfig()
    conf = confident(x, cfg)
    print(
        f"{len(label)} detections: {int((y[keep] == 0).sum())} faces, {int((y[keep] == 1).sum())} non-faces, "
        f"{int((~keep).sum())} partial (left out); job features in {t_feat:.0f}s"
    )
    print(
        f"training rule (face_logit >= {cfg.train_min_face_logit}, det_score >= {cfg.train_min_score}, "
        f"landmark offsets <= {cfg.train_max_offset}): "
        f"{int(conf.sum())} confident detections, {int((conf & (y == 1)).sum())} of them non-faces (contamination "
        f"{100 * (conf & (y == 1)).sum() / conf.sum():.1f}%)"
    )
    rows: dict[str, Row] = {}
    t = time.perf_counter()
    emb = f["embedding"]
    model = fit(x[conf], cfg, emb[conf])
    t_fit = time.perf_counter() - t
    blur = detail_terms(q[:, 11], f["width"])  # the detail term (0 here but for blurred chips)
    drocc, combined = outlier_scores(model, x, emb, blur)
    rows["stage"] = evaluate(
        combined, model.threshold, y, keep, det, "**stage: DROCC + face verifier (outlier_score)**"
    )
    rows["boundary"] = evaluate(combined, 0.0, y, keep, det, "stage with --threshold-policy boundary (0)")
    rows["detector"] = evaluate(-det, None, y, keep, det, "detector score alone")
    rows["verifier"] = evaluate(-x[:, 11], 0.0, y, keep, det, "face verifier alone (-face_logit > 0)")
    rows["drocc"] = evaluate(drocc, None, y, keep, det, "DROCC on quality features alone")
    xi = x[:, : len(DROCC_INPUTS)]
    mu, sd = xi[conf].mean(0), xi[conf].std(0) + 1e-6
    for name, est in (("isoforest", IsolationForest(random_state=0)), ("ocsvm", OneClassSVM(gamma="scale"))):
        s = -est.fit((xi[conf] - mu) / sd).score_samples((xi - mu) / sd)
        rows[name] = evaluate(s, None, y, keep, det, f"{type(est).__name__} on quality features alone")
    emb_model = train_drocc(f["embedding"][conf], cfg.drocc)
    rows["embedding"] = evaluate(
        emb_model.anomaly_scores(f["embedding"]), None, y, keep, det, "DROCC on identity embeddings (the old stage)"
    )
    chips = f["chips"].reshape(len(label), -1)
    pix = train_drocc(chips[conf], dataclasses.replace(cfg.drocc, radius_scale=4.0))
    rows["pixels"] = evaluate(pix.anomaly_scores(chips), None, y, keep, det, "DROCC MLP on 32 px grey chips")
    if chip_cnn:
        rows["cnn"] = evaluate(_chip_cnn(chips, conf, cfg), None, y, keep, det, "DROCC CNN on 32 px grey chips")
    for rule, sel in (
        ("det >= 0.95 alone (RetinaFace's confident faces)", det >= 0.95),
        ("det >= 0.8 alone", det >= 0.8),
        ("every detection (no rule)", np.ones(len(det), bool)),
        ("labelled faces only (oracle)", keep & (y == 0)),
    ):
        m = fit(x[sel], cfg, emb[sel])
        r = evaluate(outlier_scores(m, x, emb, blur)[1], m.threshold, y, keep, det, f"stage, trained on {rule}")
        r.name += f" [{100 * (sel & (y == 1)).sum() / sel.sum():.0f}% non-faces]"
        rows[rule] = r
    print("\n| method | AUC, all | AUC, det >= 0.5 | non-faces flagged | faces flagged |\n|---|---|---|---|---|")
    for r in rows.values():
        print(f"| {r.name} | {r.auc:.4f} | {r.auc_kept:.4f} | {_pct(r.nonfaces_flagged)} | {_pct(r.faces_flagged)} |")
    pasted = np.char.startswith(f["source"].astype(str), "pasted:") & (det >= 0.5)
    true, flagged = pasted & (y == 0), combined > model.threshold
    print(
        f"\npasted-face archive at recall parity (det >= 0.5): {int(true.sum())} true of {int(pasted.sum())} "
        f"detections (precision {true.sum() / pasted.sum():.3f}); after dropping outliers "
        f"{int((true & ~flagged).sum())} of {int((pasted & ~flagged).sum())} "
        f"(precision {(true & ~flagged).sum() / (pasted & ~flagged).sum():.3f}, "
        f"{int((true & flagged).sum())} true faces dropped)"
    )
    print(
        f"stage model: {model.model_id}, threshold {model.threshold:.3f} ({model.threshold_policy}), fit {t_fit:.1f}s"
    )
    print(f"chips the detail term flags (faces / non-faces): {int((blur[keep & (y == 0)] > 0).sum())} / "
          f"{int((blur[keep & (y == 1)] > 0).sum())}")  # fmt: skip
    rows |= _meaningless_embeddings(model, x, emb, keep & (y == 0))
    return rows


def _meaningless_embeddings(model, x: np.ndarray, emb: np.ndarray, faces: np.ndarray) -> dict:
    """Rows whose embedding means nothing, injected among the real faces (each a real face's
    quality features with its embedding's coordinates permuted, or a random vector of a face's
    norm: another model's output of the same size): AUC of them against the real faces, and the
    share of each flagged, with the stage's score and with the embedding term alone."""
    from sklearn.metrics import roc_auc_score

    from facepipe.stages.score.outliers import embedding_terms, outlier_scores

    rng = np.random.default_rng(0)
    real = np.flatnonzero(faces)
    base = outlier_scores(model, x[real], emb[real])[1]
    permuted = np.stack([e[rng.permutation(len(e))] for e in emb[real]])
    noise = rng.normal(size=emb[real].shape)
    noise *= np.linalg.norm(emb[real], axis=1, keepdims=True) / np.linalg.norm(noise, axis=1, keepdims=True)
    out = {}
    print("\n| injected rows (among the real faces) | AUC, outlier_score | flagged | real faces flagged | AUC, term |")
    print("|---|---|---|---|---|")
    for name, fake in (("coordinates permuted", permuted), ("random vector of a face's norm", noise)):
        s = outlier_scores(model, x[real], fake)[1]
        y = np.r_[np.zeros(len(real)), np.ones(len(real))]
        auc = roc_auc_score(y, np.r_[base, s])
        term = embedding_terms(model, np.r_[emb[real], fake], 2 * len(real))
        row = Row(
            name,
            auc,
            roc_auc_score(y, term),
            float((s > model.threshold).mean()),
            float((base > model.threshold).mean()),
        )
        print(f"| {name} | {auc:.4f} | {_pct(row.nonfaces_flagged)} | {_pct(row.faces_flagged)} | {row.auc_kept:.4f} |")
        out[f"injected: {name}"] = row
    return out


def _chip_cnn(chips: np.ndarray, conf: np.ndarray, cfg) -> np.ndarray:
    """DROCC with a 3-layer CNN on the chips (trained like the stage's model, same sample)."""
    import torch
    from torch import nn

    import facepipe.stages.score.drocc as drocc

    class ChipNet(nn.Module):
        def __init__(self, dim: int, hidden: int = 128, depth: int = 2) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            for cin, cout in ((1, 16), (16, 32), (32, 64)):
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.01), nn.MaxPool2d(2)]
            self.conv = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.Linear(64 * 16, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, 1))
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("std", torch.ones(dim))

        def standardize(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean) / self.std

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(z.reshape(-1, 1, 32, 32)).flatten(1)).squeeze(-1)

    plain, drocc.DROCCNet = drocc.DROCCNet, ChipNet
    try:
        m = drocc.train_drocc(chips[conf], dataclasses.replace(cfg.drocc, batch_size=64))
    finally:
        drocc.DROCCNet = plain
    return m.anomaly_scores(chips)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    record.run(main, "bench.accuracy.outlier_scores")
