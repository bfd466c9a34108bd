"""YuNet in plain torch, its weights read out of yuface's compiled libfacedetection: the same
faces, scores and landmarks as the library's own C++ detector (what every detector must also do
is in test_detectors.py) -- the default detector must be right before it is fast."""

import numpy as np
import pytest

from facepipe.decode import DecodeConfig, decode_image
from facepipe.demo import EXPECTED_FACES
from facepipe.detect.stage import DetectConfig
from facepipe.registry import create_model, get_model_spec


@pytest.fixture(scope="module")
def detector():
    return create_model("yunet", kind="detector")


def test_yunet_is_the_default_detector():
    assert DetectConfig().name == "yunet"
    assert get_model_spec("yunet").weights.package == "yuface"


@pytest.mark.parametrize("name", sorted(EXPECTED_FACES))
def test_matches_libfacedetection_itself_on_real_photos(detector, photos, name):
    """Reference: yuface's C++ ``detect`` (libfacedetection, the same weights) on the same BGR
    pixels. It reports integer pixels and score percent, and NMS at IoU 0.45."""
    import yuface

    d = decode_image(photos[name].read_bytes(), DecodeConfig())
    bgr = np.ascontiguousarray(d.pixels[..., ::-1])
    conf, xywh, lms = yuface.detect(bgr, conf=0.5)
    (ours,) = detector.detect([d.pixels], score_threshold=0.5, nms_threshold=0.45)
    assert len(ours) == len(conf) == EXPECTED_FACES[name]
    ref = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
    for i in range(len(conf)):
        j = int(np.argmin(np.abs(ours.boxes - ref[i]).sum(1)))
        h, w = d.pixels.shape[:2]
        clipped = np.clip(ref[i], 0, [w, h, w, h])
        assert np.abs(ours.boxes[j] - clipped).max() <= 2.0, (ours.boxes[j], ref[i])
        assert np.abs(ours.landmarks[j].reshape(-1) - lms[i]).max() <= 1.5, (ours.landmarks[j], lms[i])
        assert abs(ours.scores[j] * 100 - conf[i]) <= 1.5


def test_a_file_that_is_not_the_library_fails_clearly(photos):
    with pytest.raises(ValueError, match=r"astronaut\.png: not a libfacedetection library"):
        create_model("yunet", kind="detector", weights=photos["astronaut.png"])
