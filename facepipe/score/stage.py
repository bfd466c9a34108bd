"""Score stage: every face of a date partition gets an outlier score -> ``OUT/face_outliers/``.

What is scored is how face-like a detection is, not who it is. Two opinions, added as log-odds:

- **DROCC** (``facepipe.score.drocc``) on each face's :data:`DROCC_INPUTS` -- its landmark offsets
  and chip sharpness (``facepipe.align.quality``) -- trained on this run's **confident faces**
  (the verifier sure it is a face, a detector score >= ``train_min_score``, landmark offsets
  within ``train_max_offset``: it learns faces, not the junk it is meant to catch):
  ``drocc_score`` = DROCC's ``-logit``;
- the **face verifier** (``facepipe.score.onet``, MTCNN's ONet run by the model actors):
  ``faces.face_logit``, its log-odds that the box holds a face.

``outlier_score = drocc_score - face_logit`` (higher = more anomalous), ``is_outlier =
outlier_score > threshold``; the default threshold is the median ``drocc_score`` of the confident
faces trained on, so a face is flagged when the verifier's log-odds that it is a face do not cover
how much less face-like than a typical confident face DROCC finds it. Measured on real
detections (bench/outlier_scores.py, bench/RESULTS.md):
non-faces (dog and cat faces, coins, letters, textures) fall into a tight central cluster of the
identity embedding, so one-class models of the embedding rank them as *more* normal than faces;
these scores flag them and keep the faces.

Pure parts: :func:`face_features`, :func:`confident`, :func:`fit` (train, pick the threshold) and
:func:`score_table` (faces -> FACE_OUTLIERS rows). :func:`run_score` wires them on Ray: the
training sample (a seeded uniform sample of at most ``drocc.max_train`` confident faces of the last
``train_days`` partitions) is read on the driver, training runs in one Ray task, every face of the
partition is scored with ``map_batches``, and the output goes through the same staging + publish
protocol as the extract job.

One model per (detector, align method): their offsets differ. The model is saved as
``OUT/_models/drocc/MODEL_ID.pt`` (+ ``.json``) and can be reused with ``ScoreConfig.model``
(``--drocc-model PATH_OR_S3_URI``) instead of training. Faces written before the quality features
existed are not scored (counted as ``unscored``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from facepipe import schema
from facepipe.flags import flag, positive_int, unit_float
from facepipe.io import fs as fsio
from facepipe.io import writer
from facepipe.io.output import MODELS, Output, as_output
from facepipe.score.drocc import train_drocc
from facepipe.score.model import DROCCConfig, DROCCModel

log = logging.getLogger(__name__)

THRESHOLD_POLICIES = ("typical", "fpr", "percentile", "boundary")

#: the columns of ``faces`` the stage reads, and :func:`face_features`' columns: the 10 landmark
#: offsets, sharpness, the verifier's face log-odds, the detector's score
FEATURE_COLUMNS = ["landmark_offsets", "sharpness", "face_logit", "det_score"]
#: DROCC's inputs: the first 11 features
DROCC_INPUTS = tuple(f"landmark_offset_{i}" for i in range(schema.N_LANDMARK_VALUES)) + ("sharpness",)
_FACE_LOGIT, _DET_SCORE = len(DROCC_INPUTS), len(DROCC_INPUTS) + 1


@dataclass(frozen=True)
class ScoreConfig:
    """Outlier scoring.

    enabled: run the stage (as part of ``facepipe run``). drocc: trainer hyperparameters.
    model: a saved model (path or ``s3://``) to reuse instead of training.
    train_days: train on the faces of this many date partitions ending at the run's (1 = this
        partition only), a seeded uniform sample of at most ``drocc.max_train``.
    train_min_face_logit / train_min_score / train_max_offset: the confident faces trained on --
        the face verifier's log-odds at least this (2: p >= 0.88; detector-independent, where
        detector scores are not: CenterFace's best faces score 0.93, RetinaFace's 0.999), the
        detector's score at least this, landmark offsets (Euclidean norm of the 10, in face-box
        units) at most this.
    threshold_policy (on ``outlier_score``): ``typical`` -- the median ``drocc_score`` of the
        training faces (see the module's doc); ``fpr`` -- the score that flags ``target_fpr`` of
        held-out confident faces (``holdout_fraction`` of the sample, never trained on);
        ``percentile`` -- that percentile of the training faces' scores; ``boundary`` -- 0.
    min_faces: below this many confident faces nothing is trained (too little to learn "a face").
    """

    enabled: bool = flag(True, "--no-score", "skip the DROCC outlier-scoring stage", action="store_false")
    drocc: DROCCConfig = field(default_factory=lambda: DROCCConfig(max_train=20_000))
    model: str | None = flag(None, "--drocc-model", "reuse a saved DROCC model (path or s3://) instead of training one")
    train_days: int = flag(1, "--train-days", "train on the faces of the last N date partitions", type=positive_int)
    train_min_face_logit: float = 2.0
    train_min_score: float = flag(
        0.5, "--train-min-score", "train on faces with at least this detector score", type=unit_float
    )
    train_max_offset: float = 0.5
    threshold_policy: str = flag(
        "typical",
        "--threshold-policy",
        "outlier threshold: a typical confident face's DROCC score, a false-positive rate on held-out confident "
        "faces, a percentile of training scores, or 0",
        choices=THRESHOLD_POLICIES,
    )
    target_fpr: float = flag(0.01, "--target-fpr", "for --threshold-policy fpr", type=unit_float)
    percentile: float = 99.0
    holdout_fraction: float = 0.1
    min_faces: int = 20

    def __post_init__(self) -> None:
        if self.threshold_policy not in THRESHOLD_POLICIES:
            raise ValueError(f"threshold policy {self.threshold_policy!r} is not one of {THRESHOLD_POLICIES}")


def face_features(faces: pa.Table) -> np.ndarray:
    """Faces with ``FEATURE_COLUMNS`` (no nulls) -> (N, 13) float32, in that order."""
    offsets = schema.embedding_matrix(faces.column("landmark_offsets")).reshape(faces.num_rows, -1)
    col = lambda c: faces.column(c).to_numpy(zero_copy_only=False).astype(np.float32)[:, None]  # noqa: E731
    return np.concatenate([offsets, col("sharpness"), col("face_logit"), col("det_score")], axis=1)


def confident(features: np.ndarray, cfg: ScoreConfig) -> np.ndarray:
    """(N,) bool: the faces the model may learn from (see ``ScoreConfig``)."""
    offsets = np.linalg.norm(features[:, : schema.N_LANDMARK_VALUES], axis=1)
    verified = features[:, _FACE_LOGIT] >= cfg.train_min_face_logit
    return verified & (features[:, _DET_SCORE] >= cfg.train_min_score) & (offsets <= cfg.train_max_offset)


def outlier_scores(model: DROCCModel, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(drocc_score, outlier_score) of (N, 13) features: DROCC's -logit, and it minus the face log-odds."""
    drocc = model.anomaly_scores(features[:, : len(DROCC_INPUTS)])
    return drocc, drocc - features[:, _FACE_LOGIT]


def fit(features: np.ndarray, cfg: ScoreConfig) -> DROCCModel:
    """Train on (N, 13) ``features`` of confident faces minus a held-out part, then set the
    threshold on ``outlier_score`` by policy."""
    rng = np.random.default_rng(cfg.drocc.seed)
    n = len(features)
    n_hold = int(round(n * cfg.holdout_fraction)) if cfg.threshold_policy == "fpr" else 0
    perm = rng.permutation(n)
    hold, train = features[perm[:n_hold]], features[perm[n_hold:]]
    model = train_drocc(train[:, : len(DROCC_INPUTS)], cfg.drocc)
    model.inputs = DROCC_INPUTS
    if cfg.threshold_policy == "fpr" and len(hold):
        model.threshold = float(np.quantile(outlier_scores(model, hold)[1], 1 - cfg.target_fpr))
        model.threshold_policy = f"fpr={cfg.target_fpr} on {len(hold)} held-out confident faces"
    elif cfg.threshold_policy == "typical":
        model.threshold = float(np.median(outlier_scores(model, train)[0]))
        model.threshold_policy = f"typical: median DROCC score of {len(train)} training faces"
    elif cfg.threshold_policy == "percentile":
        model.threshold = float(np.percentile(outlier_scores(model, train)[1], cfg.percentile))
        model.threshold_policy = f"percentile={cfg.percentile} of {len(train)} training faces"
    else:
        model.threshold, model.threshold_policy = 0.0, "boundary"
    return model


def score_table(faces: pa.Table, model: DROCCModel, model_id: str, run_id: str) -> pa.Table:
    """Faces (``face_id`` and ``FEATURE_COLUMNS``) -> FACE_OUTLIERS rows."""
    n = faces.num_rows
    d, s = outlier_scores(model, face_features(faces)) if n else (np.zeros(0, np.float32),) * 2
    return pa.table(
        {
            "face_id": faces.column("face_id").cast(pa.string()),
            "drocc_score": pa.array(d, pa.float32()),
            "outlier_score": pa.array(s, pa.float32()),
            "is_outlier": pa.array(s > model.threshold, pa.bool_()),
            "threshold": pa.array(np.full(n, model.threshold, np.float32), pa.float32()),
            "model_id": pa.array([model_id] * n, pa.string()),
            "run_id": pa.array([run_id] * n, pa.string()),
        },
        schema=schema.FACE_OUTLIERS,
    )


def save_model(output: str | Output, model: DROCCModel) -> str:
    """Write ``OUT/_models/drocc/MODEL_ID.pt`` and ``.json``; returns the ``.pt`` URI."""
    out = as_output(output)
    name = model.model_id.replace("@", "-")
    out.atomic_write(out.path(MODELS, "drocc", f"{name}.pt"), model.to_bytes())
    out.atomic_write(out.path(MODELS, "drocc", f"{name}.json"), model.describe().encode())
    return out.uri_of(MODELS, "drocc", f"{name}.pt")


def load_model(uri: str) -> DROCCModel:
    fs, path = fsio.resolve(uri)
    if fs.get_file_info(path).type.name != "File":
        raise FileNotFoundError(f"DROCC model {uri} not found")
    model = DROCCModel.from_bytes(fsio.read_bytes(fs, path), uri)
    if model.inputs != DROCC_INPUTS:
        raise ValueError(f"DROCC model {uri} takes other inputs {model.inputs}, not this stage's {DROCC_INPUTS}")
    return model


def group_of(detector: str, align: str) -> str:
    """The model group of a face: its detector and align method."""
    return f"{detector} {align}"


def training_sample(ds: pads.Dataset, dt: str, cfg: ScoreConfig, group: str) -> np.ndarray:
    """Seeded uniform sample (<= max_train) of one group's confident faces' features over the last train_days."""
    day = date.fromisoformat(dt)
    dts = [(day - timedelta(days=k)).isoformat() for k in range(cfg.train_days)]
    detector, align = group.split(" ")
    t = ds.to_table(
        columns=FEATURE_COLUMNS,
        filter=pc.field("dt").isin(dts)
        & pc.field("face_logit").is_valid()
        & (pc.field("detector") == detector)
        & (pc.field("align") == align),
    )
    x = face_features(t)
    x = x[confident(x, cfg)]
    if len(x) > cfg.drocc.max_train:
        x = x[np.sort(np.random.default_rng(cfg.drocc.seed).choice(len(x), cfg.drocc.max_train, replace=False))]
    return x


_LOADED: dict[str, DROCCModel] = {}  # per worker process: deserialise each model once, not per batch


def _score_batch(
    batch: pa.Table,
    models: dict[str, bytes],
    ids: dict[str, str],
    output: Output,
    run_id: str,
    dt: str,
    only_run: str | None,
) -> pa.Table:
    keep = pc.is_valid(batch.column("face_logit"))
    batch = batch.filter(pc.and_(keep, pc.equal(batch.column("run_id"), only_run)) if only_run else keep)
    groups = [group_of(d, a) for d, a in zip(batch.column("detector").to_pylist(), batch.column("align").to_pylist())]
    parts = []
    for group, blob in models.items():
        sel = batch.filter(pa.array([g == group for g in groups]))
        if sel.num_rows:
            if ids[group] not in _LOADED:
                _LOADED[ids[group]] = DROCCModel.from_bytes(blob)
            parts.append(score_table(sel, _LOADED[ids[group]], ids[group], run_id))
    table = pa.concat_tables(parts) if parts else schema.FACE_OUTLIERS.empty_table()
    files = writer.stage_tables({"face_outliers": table}, output, run_id, dt)
    return pa.table(
        {"n": [table.num_rows], "n_outliers": [int(pc.sum(table.column("is_outlier")).as_py() or 0)], "files": [files]}
    )


def _model_for(output: Output, ds, dt: str, cfg: ScoreConfig, group: str) -> tuple[DROCCModel | None, dict]:
    """The model that scores ``group``'s faces -- the one given, or one trained on its confident
    faces in a Ray task -- and its manifest entry; None (and why) when there is none to use."""
    import ray

    if cfg.model:
        model = load_model(cfg.model)
    else:
        x = training_sample(ds, dt, cfg, group)
        if len(x) < cfg.min_faces:
            log.warning(
                "only %d confident faces of %s to learn from (min %d): not scored", len(x), group, cfg.min_faces
            )
            return None, {"skipped": f"{len(x)} confident faces < min_faces {cfg.min_faces}"}
        model = ray.get(ray.remote(num_cpus=1)(fit).remote(x, cfg))
    if model.inverted:  # its scores would rank backwards: write none rather than wrong ones
        why = (
            f"model inverted (far-probe AUC {model.far_probe_auc:.3f} < 0.5): "
            "train for more epochs after the CE-only ones"
        )
        log.warning("%s: %s; not scored", group, why)
        return None, {"skipped": why}
    info = {
        "model_id": model.model_id,
        "artifact": cfg.model or save_model(output, model),
        "threshold": model.threshold,
    }
    info |= {"threshold_policy": model.threshold_policy, "n_train": model.n_train, "far_probe_auc": model.far_probe_auc}
    return model, info


def run_score(output: str | Output, dt: str, run_id: str, cfg: ScoreConfig, only_run: str | None = None) -> dict:
    """Score the faces of partition ``dt`` (only those of run ``only_run`` if given), publish
    ``face_outliers`` under ``run_id``; returns a summary for the run manifest."""
    t0 = time.perf_counter()
    output = as_output(output)
    ds = output.dataset("faces")
    if ds is None or "face_logit" not in ds.schema.names:
        return {"faces": 0, "models": {}, "outliers": 0, "skipped": "no faces with quality features in the partition"}
    every = (pc.field("dt") == dt) & (pc.field("run_id") == only_run) if only_run else pc.field("dt") == dt
    faces = ds.to_table(columns=["detector", "align", "face_logit"], filter=every)
    usable = faces.filter(pc.is_valid(faces.column("face_logit")))
    groups = sorted(
        {group_of(d, a) for d, a in zip(usable.column("detector").to_pylist(), usable.column("align").to_pylist())}
    )
    summary: dict = {"faces": faces.num_rows, "unscored": faces.num_rows - usable.num_rows, "models": {}, "outliers": 0}
    if not groups:
        return summary | {"skipped": "no faces with quality features in the partition"}
    models, ids = {}, {}
    for group in groups:
        model, summary["models"][group] = _model_for(output, ds, dt, cfg, group)
        if model is not None:
            models[group], ids[group] = model.to_bytes(), model.model_id
    if not models:
        why = "; ".join(f"{g}: {m['skipped']}" for g, m in summary["models"].items())
        return summary | {"skipped": f"no usable model ({why})"}
    t_train = time.perf_counter() - t0
    files = [f.path for f in ds.get_fragments(filter=pc.field("dt") == dt)]
    data = writer.ray_read_files(output, files, ["face_id", "detector", "align", *FEATURE_COLUMNS, "run_id"])
    output.clear_staging(run_id, ("face_outliers",))
    stats = data.map_batches(
        _score_batch,
        fn_kwargs={"models": models, "ids": ids, "output": output, "run_id": run_id, "dt": dt, "only_run": only_run},
        batch_size=65536,
        batch_format="pyarrow",
    ).take_all()
    staged = [f for r in stats for f in r["files"]]
    output.publish(run_id, staged, tables=("face_outliers",))
    summary.update(
        scored=sum(r["n"] for r in stats),
        outliers=sum(r["n_outliers"] for r in stats),
        files=sorted(staged),
        train_s=round(t_train, 3),
        wall_s=round(time.perf_counter() - t0, 3),
        config=dataclasses.asdict(cfg),
    )
    return summary
