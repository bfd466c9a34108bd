"""Score stage: every face of a date partition gets an outlier score -> ``OUT/face_outliers/``.

What is scored is how face-like a detection is, not who it is. Two opinions, added as log-odds:

- **DROCC** (``facepipe.stages.score.drocc``) on each face's :data:`DROCC_INPUTS` -- its landmark offsets
  and chip sharpness (``facepipe.stages.align.quality``) -- trained on this run's **confident faces**
  (the verifier sure it is a face, a detector score >= ``train_min_score``, landmark offsets
  within ``train_max_offset``: it learns faces, not the junk it is meant to catch):
  ``drocc_score`` = DROCC's ``-logit``;
- the **face verifier** (``facepipe.stages.score.onet``, MTCNN's ONet run by the model actors):
  ``faces.face_logit``, its log-odds that the box holds a face.

``outlier_score = drocc_score - face_logit`` (higher = more anomalous) plus two terms that are 0
for ordinary faces -- an embedding off the confident faces' law (``facepipe.stages.score.density``)
and a chip blurred past identifying (``facepipe.stages.score.detail``) -- and ``is_outlier =
outlier_score > threshold``; the default threshold is the median ``drocc_score`` of the confident
faces trained on, so a face is flagged when the verifier's log-odds that it is a face do not cover
how much less face-like than a typical confident face DROCC finds it. Measured on real
detections (bench/accuracy/outlier_scores.py, bench/RESULTS.md):
non-faces (dog and cat faces, coins, letters, textures) fall into a tight central cluster of the
identity embedding, so one-class models of the embedding rank them as *more* normal than faces;
these scores flag them and keep the faces.

Pure parts (``facepipe.stages.score.outliers``): ``face_features``, ``confident``, ``fit`` (train, pick
the threshold) and ``score_table`` (faces -> FACE_OUTLIERS rows). :func:`run_score` wires them on Ray: the
training sample (a seeded uniform sample of at most ``drocc.max_train`` confident faces of the last
``train_days`` partitions) is read on the driver; training runs there or in one Ray task, every
face of the partition is scored there or with ``map_batches`` (the driver up to
``ScoreConfig.driver_max_faces``), and the output goes through the same staging + publish protocol
as the extract job.

One model per (detector, align method): their offsets differ. The model is saved as
``OUT/_models/drocc/MODEL_ID.pt`` (+ ``.json``) and can be reused with ``ScoreConfig.model``
(``--drocc-model PATH_OR_S3_URI``) instead of training. Faces written before the quality features
existed are not scored (counted as ``unscored``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from facepipe import schema
from facepipe.stages import write as writer
from facepipe.stages.score.model import DROCCModel
from facepipe.stages.score.outliers import (  # noqa: F401 -- the stage's public names
    DETAIL_COLUMNS,
    DROCC_INPUTS,
    FEATURE_COLUMNS,
    THRESHOLD_POLICIES,
    ScoreConfig,
    confident,
    content_order,
    face_embeddings,
    face_features,
    fit,
    outlier_scores,
    score_table,
)
from facepipe.storage import fs as fsio
from facepipe.storage.output import MODELS, Output, as_output

log = logging.getLogger(__name__)


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


#: the model shipped with the package for runs with too few confident faces to train one
#: (bench/accuracy/default_outlier_model.py: 312 confident faces of the project's own photos)
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "weights" / "drocc_default.pt"


def default_model(group: str) -> DROCCModel | None:
    """The shipped model, if it learned ``group``'s faces (the same detector and align method:
    their landmark offsets differ), else None."""
    about = DEFAULT_MODEL.with_suffix(".json")
    if not about.is_file() or json.loads(about.read_text())["group"] != group:
        return None
    return DROCCModel.from_bytes(DEFAULT_MODEL.read_bytes(), str(DEFAULT_MODEL))


def group_of(detector: str, align: str) -> str:
    """The model group of a face: its detector and align method."""
    return f"{detector} {align}"


def training_sample(ds: pads.Dataset, dt: str, cfg: ScoreConfig, group: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Seeded uniform sample (<= max_train) of one group's confident faces over the last
    train_days, in the faces' own order whatever their files, paths and ids: (features, embeddings or None)."""
    day = date.fromisoformat(dt)
    dts = [(day - timedelta(days=k)).isoformat() for k in range(cfg.train_days)]
    detector, align = group.split(" ")
    t = ds.to_table(
        columns=["face_id", *FEATURE_COLUMNS, *(["embedding"] if "embedding" in ds.schema.names else [])],
        filter=pc.field("dt").isin(dts)
        & pc.field("face_logit").is_valid()
        & (pc.field("detector") == detector)
        & (pc.field("align") == align),
    )
    # in the faces' own order (content_order): neither the files' order (their names carry a
    # random part; how rows were grouped into files depends on the run's layout) nor the face ids
    # (hashes of the images' paths) may change the sample or the training order
    x, e = face_features(t), face_embeddings(t)
    order = content_order(x, e)
    x, e = x[order], None if e is None else e[order]
    keep = np.flatnonzero(confident(x, cfg) & (True if e is None else np.isfinite(e).all(axis=1)))
    if len(keep) > cfg.drocc.max_train:
        keep = np.sort(np.random.default_rng(cfg.drocc.seed).choice(keep, cfg.drocc.max_train, replace=False))
    return x[keep], None if e is None else e[keep]


_LOADED: dict[str, DROCCModel] = {}  # per worker process: deserialise each model once, not per batch


def _score_batch(
    batch: pa.Table,
    models: dict[str, bytes],
    ids: dict[str, str],
    output: Output,
    run_id: str,
    dt: str,
    only_run: str | None,
    cfg: ScoreConfig,
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
            parts.append(score_table(sel, _LOADED[ids[group]], ids[group], run_id, cfg))
    table = pa.concat_tables(parts) if parts else schema.FACE_OUTLIERS.empty_table()
    files = writer.stage_tables({"face_outliers": table}, output, run_id, dt)
    why = [r for r in table.column("reason").to_pylist() if r is not None]
    n_outliers = int(pc.sum(table.column("is_outlier")).as_py() or 0)
    return pa.table(
        {"n": [table.num_rows], "n_outliers": [n_outliers], "files": [files], "why": [json.dumps(Counter(why))]}
    )


#: a DROCC fit in a Ray task takes minutes (20,000 faces: ~73 s on one thread); one that has not
#: finished in this long never got a CPU or never will: the run fails (exit 1) instead of waiting
FIT_TIMEOUT_S = 3600.0


def bounded_get(ref, timeout_s: float, what: str):
    """``ray.get`` with a bound: a task not done in ``timeout_s`` is cancelled and the run fails."""
    import ray

    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise RuntimeError(f"{what} did not finish in {timeout_s:.0f}s (no CPU free for it on the cluster?)") from None


def on_driver(n_faces: int, cfg: ScoreConfig) -> bool:
    """Whether work on ``n_faces`` faces stays in this process: a small one always, any one when
    the run did not start Ray (the local executor's run: scoring follows the executor the run chose)."""
    ray = sys.modules.get("ray")
    return n_faces <= cfg.driver_max_faces or ray is None or not ray.is_initialized()


def _model_for(output: Output, ds, dt: str, cfg: ScoreConfig, group: str) -> tuple[DROCCModel | None, dict]:
    """The model that scores ``group``'s faces -- the one given, one trained on its confident
    faces (in the driver or a Ray task), or with too few of those the one shipped for the group
    (:func:`default_model`) -- and its manifest entry; None (and why) when there is none to use."""
    artifact, x, e = cfg.model, None, None
    if not artifact:
        x, e = training_sample(ds, dt, cfg, group)
    if artifact:
        model = load_model(artifact)
    elif len(x) < cfg.min_faces:
        few = f"{len(x)} confident faces < min_faces {cfg.min_faces}"
        if (model := default_model(group)) is None:
            log.warning("%s: %s to learn from: not scored", group, few)
            return None, {"skipped": few}
        artifact = f"shipped with facepipe ({DEFAULT_MODEL.name}): {few}"
    elif on_driver(len(x), cfg):  # ScoreConfig: the driver has torch loaded already
        model = fit(x, cfg, e)
    else:
        import ray

        model = bounded_get(ray.remote(num_cpus=1)(fit).remote(x, cfg, e), FIT_TIMEOUT_S, f"training {group}'s model")
    if model.inverted:  # its scores would rank backwards: write none rather than wrong ones
        why = (
            f"model inverted (far-probe AUC {model.far_probe_auc:.3f} < 0.5): "
            "train for more epochs after the CE-only ones"
        )
        log.warning("%s: %s; not scored", group, why)
        return None, {"skipped": why}
    info = {"model_id": model.model_id, "artifact": artifact or save_model(output, model), "threshold": model.threshold}
    info |= {"shipped": artifact is not None and not cfg.model}
    info |= {"threshold_policy": model.threshold_policy, "n_train": model.n_train, "far_probe_auc": model.far_probe_auc}
    return model, info


def _reasons(stats: list[dict]) -> dict[str, int]:
    """The flagged faces of the batches' ``stats`` counted by reason."""
    return dict(sorted(sum((Counter(json.loads(r["why"])) for r in stats), Counter()).items()))


def run_score(output: str | Output, dt: str, run_id: str, cfg: ScoreConfig, only_run: str | None = None) -> dict:
    """Score the faces of partition ``dt`` (only those of run ``only_run`` if given), publish
    ``face_outliers`` under ``run_id``; returns a summary for the run manifest."""
    t0 = time.perf_counter()
    output = as_output(output)
    output.recover()
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
    columns = ["face_id", "detector", "align", *FEATURE_COLUMNS, *DETAIL_COLUMNS, "run_id"]
    columns += ["embedding"] if "embedding" in ds.schema.names else []
    kwargs = dict(models=models, ids=ids, output=output, run_id=run_id, dt=dt, only_run=only_run, cfg=cfg)
    output.clear_staging(run_id, ("face_outliers",))
    if on_driver(ds.count_rows(filter=pc.field("dt") == dt), cfg):  # no Ray tasks to start
        table = writer.read_files(pa.table({"path": files}), output, columns, schema.FACES)
        stats = [_score_batch(table, **kwargs).to_pylist()[0]]
    else:
        data = writer.ray_read_files(output, files, columns, declared=schema.FACES)
        stats = data.map_batches(_score_batch, fn_kwargs=kwargs, batch_size=65536, batch_format="pyarrow").take_all()
    staged = [f for r in stats for f in r["files"]]
    output.publish(run_id, staged, tables=("face_outliers",))
    summary.update(
        scored=sum(r["n"] for r in stats),
        outliers=sum(r["n_outliers"] for r in stats),
        reasons=_reasons(stats),
        files=sorted(staged),
        train_s=round(t_train, 3),
        wall_s=round(time.perf_counter() - t0, 3),
        config=dataclasses.asdict(cfg),
    )
    return summary
