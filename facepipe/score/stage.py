"""Score stage: every face of a date partition gets a DROCC outlier score -> ``OUT/face_outliers/``.

Pure parts: :func:`fit` (train on normal embeddings, hold some out, pick the threshold) and
:func:`score_table` (faces -> FACE_OUTLIERS rows). :func:`run_score` wires them on Ray: the
training sample is read on the driver (at most ``drocc.max_train`` faces, a seeded uniform
sample of the last ``train_days`` partitions), training runs in one Ray task, scoring maps over
all faces of the partition with ``map_batches``, and the output goes through the same staging +
publish protocol as the extract job (readers never see half a table).

One model per embedder: embeddings of different models are never mixed. The model is saved as
``OUT/_models/drocc/MODEL_ID.pt`` (+ ``.json`` describing it) and can be reused with
``ScoreConfig.model`` (``--drocc-model PATH_OR_S3_URI``) instead of training.
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
from facepipe.score.drocc import DROCCConfig, DROCCModel, train_drocc

log = logging.getLogger(__name__)

THRESHOLD_POLICIES = ("fpr", "percentile", "boundary")


@dataclass(frozen=True)
class ScoreConfig:
    """Outlier scoring.

    enabled: run the stage (as part of ``facepipe run``). drocc: trainer hyperparameters.
    model: a saved model (path or ``s3://``) to reuse instead of training.
    train_days: train on the faces of this many date partitions ending at the run's (1 = this
        partition only), a seeded uniform sample of at most ``drocc.max_train``.
    threshold_policy: ``fpr`` -- the score that flags ``target_fpr`` of held-out normal faces
        (``holdout_fraction`` of the sample, never trained on); ``percentile`` -- that percentile
        of the training faces' scores; ``boundary`` -- 0, the model's own decision boundary.
    min_faces: below this many faces nothing is trained (too little to learn "normal").
    """

    enabled: bool = flag(True, "--no-score", "skip the DROCC outlier-scoring stage", action="store_false")
    drocc: DROCCConfig = field(default_factory=DROCCConfig)
    model: str | None = flag(None, "--drocc-model", "reuse a saved DROCC model (path or s3://) instead of training one")
    train_days: int = flag(1, "--train-days", "train on the faces of the last N date partitions", type=positive_int)
    threshold_policy: str = flag(
        "fpr",
        "--threshold-policy",
        "outlier threshold: a target false-positive rate on held-out faces, a percentile of training scores, or 0",
        choices=("fpr", "percentile", "boundary"),
    )
    target_fpr: float = flag(0.01, "--target-fpr", "for --threshold-policy fpr", type=unit_float)
    percentile: float = 99.0
    holdout_fraction: float = 0.1
    min_faces: int = 20

    def __post_init__(self) -> None:
        if self.threshold_policy not in THRESHOLD_POLICIES:
            raise ValueError(f"threshold policy {self.threshold_policy!r} is not one of {THRESHOLD_POLICIES}")


def fit(embeddings: np.ndarray, cfg: ScoreConfig) -> DROCCModel:
    """Train on ``embeddings`` (N, D) minus a held-out part, then set the threshold by policy."""
    rng = np.random.default_rng(cfg.drocc.seed)
    n = len(embeddings)
    n_hold = int(round(n * cfg.holdout_fraction)) if cfg.threshold_policy == "fpr" else 0
    perm = rng.permutation(n)
    hold, train = embeddings[perm[:n_hold]], embeddings[perm[n_hold:]]
    model = train_drocc(train, cfg.drocc)
    if cfg.threshold_policy == "fpr" and len(hold):
        model.threshold = float(np.quantile(model.anomaly_scores(hold), 1 - cfg.target_fpr))
        model.threshold_policy = f"fpr={cfg.target_fpr} on {len(hold)} held-out faces"
    elif cfg.threshold_policy == "percentile":
        model.threshold = float(np.percentile(model.anomaly_scores(train), cfg.percentile))
        model.threshold_policy = f"percentile={cfg.percentile} of {len(train)} training faces"
    else:
        model.threshold, model.threshold_policy = 0.0, "boundary"
    return model


def score_table(faces: pa.Table, model: DROCCModel, model_id: str, run_id: str) -> pa.Table:
    """Faces (``face_id``, ``embedding``) -> FACE_OUTLIERS rows."""
    n = faces.num_rows
    emb = schema.embedding_matrix(faces.column("embedding"))
    s = model.anomaly_scores(emb) if n else np.zeros(0, np.float32)
    return pa.table(
        {
            "face_id": faces.column("face_id").cast(pa.string()),
            "drocc_score": pa.array(s, pa.float32()),
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
    return DROCCModel.from_bytes(fsio.read_bytes(fs, path), uri)


def _filter(dts: list[str], run_id: str | None):
    f = pc.field("dt").isin(dts)
    return f & (pc.field("run_id") == run_id) if run_id else f


def training_sample(ds: pads.Dataset, dt: str, cfg: ScoreConfig, embedder: str) -> np.ndarray:
    """Seeded uniform sample (<= max_train) of one embedder's faces over the last train_days."""
    day = date.fromisoformat(dt)
    dts = [(day - timedelta(days=k)).isoformat() for k in range(cfg.train_days)]
    t = ds.to_table(columns=["embedding"], filter=_filter(dts, None) & (pc.field("embedder") == embedder))
    n = t.num_rows
    if n > cfg.drocc.max_train:
        idx = np.sort(np.random.default_rng(cfg.drocc.seed).choice(n, cfg.drocc.max_train, replace=False))
        t = t.take(pa.array(idx))
        n = t.num_rows
    return schema.embedding_matrix(t.column("embedding"))


_LOADED: dict[str, DROCCModel] = {}  # per worker process: deserialise each model once, not per batch


def _score_batch(
    batch: pa.Table,
    models: dict[str, bytes],
    ids: dict[str, str],
    output: str,
    run_id: str,
    dt: str,
    only_run: str | None,
) -> pa.Table:
    if only_run:
        batch = batch.filter(pc.equal(batch.column("run_id"), only_run))
    parts = []
    for embedder, blob in models.items():
        sel = batch.filter(pc.equal(batch.column("embedder"), embedder))
        if sel.num_rows:
            if ids[embedder] not in _LOADED:
                _LOADED[ids[embedder]] = DROCCModel.from_bytes(blob)
            parts.append(score_table(sel, _LOADED[ids[embedder]], ids[embedder], run_id))
    table = pa.concat_tables(parts) if parts else schema.FACE_OUTLIERS.empty_table()
    files = writer.stage_tables({"face_outliers": table}, as_output(output), run_id, dt)
    return pa.table(
        {"n": [table.num_rows], "n_outliers": [int(pc.sum(table.column("is_outlier")).as_py() or 0)], "files": [files]}
    )


def _model_for(output: Output, ds, dt: str, cfg: ScoreConfig, emb: str) -> tuple[DROCCModel | None, dict]:
    """The model that scores embedder ``emb``'s faces -- the one given, or one trained on this
    partition in a Ray task -- and its manifest entry; None (and why) when there is none to use."""
    import ray

    if cfg.model:
        model = load_model(cfg.model)
    else:
        x = training_sample(ds, dt, cfg, emb)
        if len(x) < cfg.min_faces:
            log.warning("only %d faces of %s to learn from (min %d): not scored", len(x), emb, cfg.min_faces)
            return None, {"skipped": f"{len(x)} faces < min_faces {cfg.min_faces}"}
        model = ray.get(ray.remote(num_cpus=1)(fit).remote(x, cfg))
    if model.inverted:  # its scores would rank backwards: write none rather than wrong ones
        why = (
            f"model inverted (far-probe AUC {model.far_probe_auc:.3f} < 0.5): "
            "train for more epochs after the CE-only ones"
        )
        log.warning("%s: %s; not scored", emb, why)
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
    faces = (
        ds.to_table(columns=["embedder"], filter=_filter([dt], only_run))
        if ds is not None
        else pa.table({"embedder": pa.array([], pa.string())})
    )
    embedders = sorted(set(faces.column("embedder").to_pylist()) - {None})
    summary: dict = {"faces": faces.num_rows, "models": {}, "outliers": 0}
    if not embedders:
        return summary | {"skipped": "no faces with embeddings in the partition"}
    models, ids = {}, {}
    for emb in embedders:
        model, summary["models"][emb] = _model_for(output, ds, dt, cfg, emb)
        if model is not None:
            models[emb], ids[emb] = model.to_bytes(), model.model_id
    if not models:
        why = "; ".join(f"{e}: {m['skipped']}" for e, m in summary["models"].items())
        return summary | {"skipped": f"no usable model ({why})"}
    t_train = time.perf_counter() - t0
    files = [f.path for f in ds.get_fragments(filter=_filter([dt], only_run))]
    data = writer.ray_read_files(output, files, ["face_id", "embedding", "embedder", "run_id"])
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
