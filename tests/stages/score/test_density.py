"""The outlier score's embedding term (facepipe.stages.score.density): 0 for faces like the
confident faces it was fitted on, large for a row whose embedding means nothing (coordinates
permuted: AUC 0.58 before the term), kept in the model artifact, and named as the reason a face
is flagged. Real detections: tests/stages/score/test_outlier_evidence.py."""

import numpy as np
import pyarrow as pa

from facepipe.stages.score.density import CAP, fit_density
from facepipe.stages.score.drocc import DROCCConfig
from facepipe.stages.score.model import DROCCModel
from facepipe.stages.score.outliers import REASONS, ScoreConfig, fit, score_table

D = 128


def _faces(n: int, seed: int = 0) -> np.ndarray:
    """Embeddings with a structure of their own, as real ones have: correlated coordinates of
    different scales around a mean that is not 0."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(D, D)) / np.sqrt(D)
    scales = np.exp(np.random.default_rng(98).normal(size=D)) * 0.05
    return (rng.normal(size=(n, D)) * scales) @ mix + np.linspace(-0.1, 0.1, D)


def test_the_term_is_zero_for_faces_and_large_for_meaningless_embeddings():
    for n in (20, 300, 3000):  # a night of few confident faces (fewer than dimensions) to a large one
        law = fit_density(_faces(n))
        new = _faces(4000, seed=1)
        assert (law.term(new) > 0).mean() <= 0.005, n
        permuted = np.stack([e[np.random.default_rng(i).permutation(D)] for i, e in enumerate(new[:300])])
        assert np.median(law.term(permuted)) >= (5 if n == 20 else CAP), n
    nan = np.full((2, D), np.nan)
    assert (law.term(nan) == 0).all()


def _features(n: int, seed: int = 0) -> np.ndarray:
    """Quality features of confident faces (10 landmark offsets, sharpness, face log-odds, det score)."""
    rng = np.random.default_rng(seed)
    return np.c_[rng.normal(0.1, 0.03, (n, 10)), rng.normal(5, 0.3, n), rng.normal(6, 1, n), rng.uniform(0.95, 1, n)]


def test_the_law_is_kept_in_the_artifact_and_flags_with_its_reason():
    cfg = ScoreConfig(drocc=DROCCConfig(epochs=8, only_ce_epochs=2, hidden=32))
    x, e = _features(200).astype(np.float32), _faces(200).astype(np.float32)
    model = DROCCModel.from_bytes(fit(x, cfg, e).to_bytes())
    assert model.density is not None and model.density.n == 200
    fake = e[:5][:, np.random.default_rng(0).permutation(D)]
    faces = pa.table(
        {
            "face_id": [f"f{i}" for i in range(10)],
            "landmark_offsets": pa.FixedSizeListArray.from_arrays(pa.array(x[:10, :10].reshape(-1)), 10),
            "sharpness": x[:10, 10],
            "face_logit": x[:10, 11],
            "det_score": x[:10, 12],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.r_[e[5:10], fake].reshape(-1)), D),
        }
    )
    t = score_table(faces, model, model.model_id, "r1").to_pydict()
    assert t["is_outlier"] == [False] * 5 + [True] * 5
    assert t["reason"] == [None] * 5 + [REASONS[2]] * 5
    assert all(s == 0 for s in t["embedding_score"][:5]) and all(s > 5 for s in t["embedding_score"][5:])


def test_a_model_without_a_law_still_loads_and_adds_nothing():
    cfg = ScoreConfig(drocc=DROCCConfig(epochs=4, only_ce_epochs=1, hidden=16))
    x = _features(50).astype(np.float32)
    model = DROCCModel.from_bytes(fit(x, cfg).to_bytes())  # trained without embeddings (as before the term)
    assert model.density is None
    faces = pa.table(
        {
            "face_id": ["a"],
            "landmark_offsets": pa.FixedSizeListArray.from_arrays(pa.array(x[:1, :10].reshape(-1)), 10),
            "sharpness": x[:1, 10],
            "face_logit": x[:1, 11],
            "det_score": x[:1, 12],
        }
    )
    assert score_table(faces, model, model.model_id, "r").column("embedding_score").to_pylist() == [0.0]


def test_the_shipped_model_serves_only_the_faces_it_learned():
    """A run with too few confident faces to train (the demo) is scored by the model shipped
    with facepipe -- but only faces of the detector and align method it learned (their landmark
    offsets differ); it carries the embedding law."""
    import json

    from facepipe.stages.score.stage import DEFAULT_MODEL, DROCC_INPUTS, default_model

    group = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())["group"]
    model = default_model(group)
    assert model is not None and model.inputs == DROCC_INPUTS and model.density is not None
    assert model.density.dim == 128 and not model.inverted
    assert default_model("centerface@x dlib_sp5") is None
