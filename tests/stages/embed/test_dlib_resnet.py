"""The torch port of dlib's face descriptor equals dlib's, single and batched."""

import numpy as np
import pytest

from facepipe.registry import create_model, get_model_spec
from facepipe.stages.align.shape_predictor import dlib_rects
from facepipe.stages.embed.dlib_resnet import DLIB_SAME_PERSON_THRESHOLD, read_dlib_dnn


@pytest.fixture(scope="module")
def net():
    return create_model("dlib_resnet", kind="embedder")


@pytest.fixture(scope="module")
def dlib_chips(photo_faces, dlib):
    """dlib's own 150x150 chips (its predictor, its get_face_chip) of every face in the photos."""
    sp = dlib.shape_predictor(str(get_model_spec("dlib_shape_predictor_5").weights.locate()))
    chips = []
    for pf in photo_faces:
        for r in dlib_rects(pf.boxes):
            chips.append(
                dlib.get_face_chip(pf.image, sp(pf.image, dlib.rectangle(*map(int, r))), size=150, padding=0.25)
            )
    return np.stack(chips)


def test_descriptors_match_dlib_single_and_batched(net, dlib_chips, dlib):
    rec = dlib.face_recognition_model_v1(str(get_model_spec("dlib_resnet").weights.locate()))
    ref = np.array([rec.compute_face_descriptor(c) for c in dlib_chips], np.float32)
    batched = net.embed(dlib_chips, batch_size=8)
    single = np.concatenate([net.embed(c[None]) for c in dlib_chips])
    assert len(dlib_chips) >= 15
    # README: "equal to dlib's compute_face_descriptor to 5e-7" (measured: 3.9e-7 at most)
    assert np.abs(batched - ref).max() <= 5e-7, np.abs(batched - ref).max()
    assert np.abs(single - ref).max() <= 5e-7, np.abs(single - ref).max()
    assert batched.dtype == np.float32 and batched.shape[1] == 128


def test_same_person_threshold_is_dlibs_and_read_from_the_file(net):
    dnn = read_dlib_dnn(get_model_spec("dlib_resnet").weights.locate())
    assert net.same_person_threshold == DLIB_SAME_PERSON_THRESHOLD == 0.6
    assert dnn.loss == "loss_metric_2" and dnn.loss_params[1] == pytest.approx(0.6)
    assert sum(layer.kind == "con" for layer in dnn.layers) == 29 and net.chip.size == 150 and net.chip.padding == 0.25


def test_chips_of_the_wrong_size_are_refused(net):
    with pytest.raises(ValueError, match=r"\(N, 150, 150, 3\)"):
        net.embed(np.zeros((1, 112, 112, 3), np.uint8))


def test_a_file_that_is_not_dlibs_net_is_refused(tmp_path, photos):
    with pytest.raises(ValueError):
        read_dlib_dnn(photos["astronaut.png"])
