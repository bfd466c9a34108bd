"""The numpy port of dlib's 5-point shape predictor gives dlib's own landmarks."""

import numpy as np
import pytest

from facepipe.dlib_format import DlibFormatError
from facepipe.registry import create_model, get_model_spec
from facepipe.stages.align.shape_predictor import dlib_rects, read_shape_predictor


@pytest.fixture(scope="module")
def predictor():
    return create_model("dlib_shape_predictor_5", kind="landmarks")


def test_landmarks_equal_dlibs_on_real_photos(predictor, photo_faces, dlib):
    """Same image, same rectangle -> the same 5 integer points as dlib.shape_predictor, for
    CenterFace's boxes and for the same boxes shifted and resized by up to 10 px."""
    ref = dlib.shape_predictor(str(get_model_spec("dlib_shape_predictor_5").weights.locate()))
    rng = np.random.default_rng(0)
    n, worst = 0, 0.0
    for pf in photo_faces:
        rects = dlib_rects(pf.boxes)
        rects = np.concatenate([rects, rects + rng.integers(-10, 11, rects.shape)])
        ours = predictor.predict(pf.image, rects)
        for r, o in zip(rects, ours):
            s = ref(pf.image, dlib.rectangle(*map(int, r)))
            theirs = np.array([[s.part(i).x, s.part(i).y] for i in range(5)])
            worst = max(worst, float(np.abs(theirs - o).max()))
            n += 1
    assert n >= 30 and worst == 0.0, f"{n} faces, worst point difference {worst} px"


def test_no_faces_gives_no_points(predictor, photo_faces):
    assert predictor.predict(photo_faces[0].image, np.zeros((0, 4))).shape == (0, 5, 2)


def test_wrong_file_is_refused_with_the_position(tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x01\x81\x0a\x81\x01" + b"\x00" * 3)
    with pytest.raises(DlibFormatError, match="bad.dat"):
        read_shape_predictor(bad)


def test_parsed_model_is_cached_and_reloads_identically(tmp_path):
    from facepipe.stages.align.shape_predictor import load_shape_predictor

    path = get_model_spec("dlib_shape_predictor_5").weights.locate()
    first = load_shape_predictor(path, cache=tmp_path)
    assert len(list(tmp_path.glob("shape_predictor-*.npz"))) == 1
    again = load_shape_predictor(path, cache=tmp_path)
    for name in ("initial_shape", "split_idx", "split_thresh", "leaves", "anchor_idx", "deltas"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
