"""The outlier score's pure core: the features a face is scored on, the confident faces a model
learns from, training with the threshold policy, and the ``face_outliers`` rows of a batch of
faces. ``facepipe.stages.score.stage`` runs them on Ray; the design and its measurements are there."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from facepipe import schema
from facepipe.flags import flag, positive_int, unit_float
from facepipe.stages.cluster.constraints import canonical_order
from facepipe.stages.score.density import fit_density
from facepipe.stages.score.detail import MIN_DETAIL, MIN_FACE, detail_terms
from facepipe.stages.score.drocc import train_drocc
from facepipe.stages.score.model import DROCCConfig, DROCCModel

THRESHOLD_POLICIES = ("typical", "fpr", "percentile", "boundary")

#: the columns of ``faces`` the stage reads, and :func:`face_features`' columns: the 10 landmark
#: offsets, sharpness, the verifier's face log-odds, the detector's score
FEATURE_COLUMNS = ["landmark_offsets", "sharpness", "face_logit", "det_score"]
#: what the detail term reads (``facepipe.stages.score.detail``): the chip's detail, the box's width
DETAIL_COLUMNS = ["detail", "x1", "x2"]
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
    min_detail / detail_min_face: the detail term's floor and the narrowest face it judges
        (``facepipe.stages.score.detail``).
    min_faces: below this many confident faces nothing is trained (too little to learn "a face").
    driver_max_faces: a training sample, or a partition to score, of at most this many faces is
        handled in the driver process (torch is loaded there already); larger ones in Ray tasks
        when the run uses Ray (a run of the local executor keeps all of it in the driver).
        A Ray task first starts a worker and imports torch: seconds that a 200-photo run feels.
    """

    enabled: bool = flag(True, "--no-score", "skip the DROCC outlier-scoring stage", action="store_false")
    drocc: DROCCConfig = field(default_factory=DROCCConfig)
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
    min_detail: float = flag(
        MIN_DETAIL,
        "--outlier-min-detail",
        "flag faces whose chip has less detail than this (faces.detail; the default is measured for dlib's chip)",
        type=float,
    )
    detail_min_face: float = MIN_FACE
    min_faces: int = 20
    driver_max_faces: int = 5000

    def __post_init__(self) -> None:
        if self.threshold_policy not in THRESHOLD_POLICIES:
            raise ValueError(f"threshold policy {self.threshold_policy!r} is not one of {THRESHOLD_POLICIES}")


def face_features(faces: pa.Table) -> np.ndarray:
    """Faces with ``FEATURE_COLUMNS`` (no nulls) -> (N, 13) float32, in that order."""
    offsets = schema.embedding_matrix(faces.column("landmark_offsets")).reshape(faces.num_rows, -1)
    col = lambda c: faces.column(c).to_numpy(zero_copy_only=False).astype(np.float32)[:, None]  # noqa: E731
    return np.concatenate([offsets, col("sharpness"), col("face_logit"), col("det_score")], axis=1)


def content_order(features: np.ndarray, embeddings: np.ndarray | None = None) -> np.ndarray:
    """Row order by the faces' own values (their features, then their embeddings): the same faces
    train the same model whatever their ids, which hash the images' paths (a renamed or moved
    archive must not change which faces are outliers). Equal rows are interchangeable."""
    m = features if embeddings is None else np.concatenate([features, np.nan_to_num(embeddings)], axis=1)
    return canonical_order(m)


def confident(features: np.ndarray, cfg: ScoreConfig) -> np.ndarray:
    """(N,) bool: the faces the model may learn from (see ``ScoreConfig``)."""
    offsets = np.linalg.norm(features[:, : schema.N_LANDMARK_VALUES], axis=1)
    verified = features[:, _FACE_LOGIT] >= cfg.train_min_face_logit
    return verified & (features[:, _DET_SCORE] >= cfg.train_min_score) & (offsets <= cfg.train_max_offset)


#: why a flagged face is flagged: the largest of the outlier score's four parts
REASONS = ("unusable chip", "not a face", "embedding off the faces", "blurred chip")


def embedding_terms(model: DROCCModel, embeddings: np.ndarray | None, n: int) -> np.ndarray:
    """(N,) the embedding term (``facepipe.stages.score.density``): 0 without a law, without
    embeddings, or for embeddings of another size."""
    if model.density is None or embeddings is None or embeddings.shape[1:] != (model.density.dim,):
        return np.zeros(n, np.float32)
    return model.density.term(embeddings)


def score_parts(
    model: DROCCModel, features: np.ndarray, embeddings: np.ndarray | None = None, blur: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(drocc_score, embedding term, outlier_score) of (N, 13) features, (N, D) embeddings and
    the (N,) detail term ``blur`` (none: 0): DROCC's -logit, the embedding's distance term, and
    the first minus the face log-odds plus both terms."""
    drocc = model.anomaly_scores(features[:, : len(DROCC_INPUTS)])
    emb = embedding_terms(model, embeddings, len(features))
    return drocc, emb, drocc - features[:, _FACE_LOGIT] + emb + (0.0 if blur is None else blur)


def outlier_scores(
    model: DROCCModel, features: np.ndarray, embeddings: np.ndarray | None = None, blur: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(drocc_score, outlier_score): :func:`score_parts` without the embedding term on its own."""
    drocc, _, score = score_parts(model, features, embeddings, blur)
    return drocc, score


def reasons(model: DROCCModel, features: np.ndarray, drocc: np.ndarray, emb: np.ndarray, blur: np.ndarray) -> list[str]:
    """The largest part of each face's outlier score above the threshold (:data:`REASONS`)."""
    parts = np.stack([drocc - model.threshold, -features[:, _FACE_LOGIT], emb, blur], axis=1)
    return [REASONS[i] for i in np.argmax(parts, axis=1)]


def fit(features: np.ndarray, cfg: ScoreConfig, embeddings: np.ndarray | None = None) -> DROCCModel:
    """Train on (N, 13) ``features`` of confident faces minus a held-out part (and the law of
    their (N, D) ``embeddings``), then set the threshold on ``outlier_score`` by policy."""
    rng = np.random.default_rng(cfg.drocc.seed)
    n = len(features)
    n_hold = int(round(n * cfg.holdout_fraction)) if cfg.threshold_policy == "fpr" else 0
    perm = rng.permutation(n)
    hold, train = features[perm[:n_hold]], features[perm[n_hold:]]
    model = train_drocc(train[:, : len(DROCC_INPUTS)], cfg.drocc)
    model.inputs = DROCC_INPUTS
    hold_e = train_e = None
    if embeddings is not None and len(embeddings) >= 4:
        hold_e, train_e = embeddings[perm[:n_hold]], embeddings[perm[n_hold:]]
        model.density = fit_density(embeddings[np.sort(perm[n_hold:])])  # in the given order
    if cfg.threshold_policy == "fpr" and n_hold:
        model.threshold = float(np.quantile(outlier_scores(model, hold, hold_e)[1], 1 - cfg.target_fpr))
        model.threshold_policy = f"fpr={cfg.target_fpr} on {n_hold} held-out confident faces"
    elif cfg.threshold_policy == "typical":
        model.threshold = float(np.median(outlier_scores(model, train)[0]))
        model.threshold_policy = f"typical: median DROCC score of {len(train)} training faces"
    elif cfg.threshold_policy == "percentile":
        model.threshold = float(np.percentile(outlier_scores(model, train, train_e)[1], cfg.percentile))
        model.threshold_policy = f"percentile={cfg.percentile} of {len(train)} training faces"
    else:
        model.threshold, model.threshold_policy = 0.0, "boundary"
    return model


def face_embeddings(faces: pa.Table) -> np.ndarray | None:
    """The faces' ``embedding`` column as (N, D) float32 (NaN rows where null), or None without one."""
    if "embedding" not in faces.column_names or faces.num_rows == 0:
        return None
    col = faces.column("embedding").combine_chunks()
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    if not valid.any():
        return None
    dim = getattr(col.type, "list_size", None) or len(col.filter(col.is_valid())[0])
    out = np.full((faces.num_rows, dim), np.nan, np.float32)
    out[valid] = schema.embedding_matrix(col.filter(col.is_valid()))
    return out


def face_detail_terms(faces: pa.Table, cfg: ScoreConfig) -> np.ndarray:
    """(N,) the detail term of faces with ``DETAIL_COLUMNS`` (0 for all without them)."""
    if not set(DETAIL_COLUMNS) <= set(faces.column_names):
        return np.zeros(faces.num_rows, np.float32)
    col = lambda c: faces.column(c).to_numpy(zero_copy_only=False).astype(np.float64)  # noqa: E731 (nulls: NaN)
    return detail_terms(col("detail"), col("x2") - col("x1"), cfg.min_detail, cfg.detail_min_face)


def score_table(
    faces: pa.Table, model: DROCCModel, model_id: str, run_id: str, cfg: ScoreConfig | None = None
) -> pa.Table:
    """Faces (``face_id``, ``FEATURE_COLUMNS``, their ``embedding`` and ``DETAIL_COLUMNS``) -> FACE_OUTLIERS rows."""
    n, x, e = faces.num_rows, face_features(faces), face_embeddings(faces)
    blur = face_detail_terms(faces, cfg or ScoreConfig())
    d, emb, s = score_parts(model, x, e, blur) if n else (np.zeros(0, np.float32),) * 3
    flagged = s > model.threshold
    why = [r if f else None for r, f in zip(reasons(model, x, d, emb, blur), flagged)]
    return pa.table(
        {
            "face_id": faces.column("face_id").cast(pa.string()),
            "drocc_score": pa.array(d, pa.float32()),
            "outlier_score": pa.array(s, pa.float32()),
            "is_outlier": pa.array(flagged, pa.bool_()),
            "threshold": pa.array(np.full(n, model.threshold, np.float32), pa.float32()),
            "model_id": pa.array([model_id] * n, pa.string()),
            "run_id": pa.array([run_id] * n, pa.string()),
            "embedding_score": pa.array(emb, pa.float32()),
            "reason": pa.array(why, pa.string()),
            "detail_score": pa.array(blur, pa.float32()),
        },
        schema=schema.FACE_OUTLIERS,
    )
