"""The outlier score's detail term (facepipe.stages.score.detail): 0 for a chip at or above the
floor, growing below it up to its cap; nothing for faces narrower than the identities cluster
(their chips are upsampled: detail measures their size) nor for faces written before detail
was measured. On real photos: tests/stages/align/test_quality.py (the measure) and
tests/stages/score/test_outliers_e2e.py (blurred faces flagged, 'blurred chip')."""

import numpy as np
import pyarrow as pa

from facepipe.stages.score.detail import CAP, MIN_DETAIL, MIN_FACE, SLOPE, detail_terms
from facepipe.stages.score.outliers import ScoreConfig, face_detail_terms


def test_the_term_is_zero_above_the_floor_and_grows_below_it_to_its_cap():
    d = np.array([0.0, MIN_DETAIL, MIN_DETAIL - 0.05, MIN_DETAIL - 0.5, MIN_DETAIL - 5, np.nan])
    t = detail_terms(d, np.full(len(d), 100.0))
    assert t.dtype == np.float32
    np.testing.assert_allclose(t, [0, 0, 0.05 * SLOPE, CAP, CAP, 0], rtol=1e-4)


def test_faces_narrower_than_the_identities_cluster_are_not_judged_on_detail():
    t = detail_terms(np.full(3, MIN_DETAIL - 1), np.array([MIN_FACE - 1, MIN_FACE, np.nan]))
    assert t.tolist() == [0.0, CAP, 0.0]
    assert (detail_terms(np.full(2, MIN_DETAIL - 1), np.full(2, 100.0), min_detail=-7) == 0).all()


def test_faces_without_the_columns_or_written_before_detail_get_nothing():
    cfg = ScoreConfig()
    assert (face_detail_terms(pa.table({"face_id": ["a", "b"]}), cfg) == 0).all()
    faces = pa.table({"detail": pa.array([None, -9.0], pa.float32()), "x1": [0.0, 0.0], "x2": [100.0, 100.0]})
    assert face_detail_terms(faces, cfg).tolist() == [0.0, CAP]
    assert face_detail_terms(faces, ScoreConfig(min_detail=-10)).tolist() == [0.0, 0.0]
