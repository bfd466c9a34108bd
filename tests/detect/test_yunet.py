"""YuNet in plain torch, its weights read out of yuface's compiled libfacedetection: the same
faces, scores and landmarks as the library's own C++ detector, every face of the real photos, and
the dev set's recall -- the default detector must be right before it is fast."""

import numpy as np
import pytest

from facepipe.decode import DecodeConfig, decode_image
from facepipe.demo import EXPECTED_FACES
from facepipe.detect.stage import DetectConfig
from facepipe.evaluate import load_imglab, recall_report
from facepipe.registry import create_model, get_model_spec


@pytest.fixture(scope="module")
def detector():
    return create_model("yunet", kind="detector")


def _detect(detector, photos, name):
    d = decode_image(photos[name].read_bytes(), DecodeConfig())
    return detector.detect([d.pixels])[0].scaled(d.scale_x, d.scale_y), d


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


@pytest.mark.parametrize("name", sorted(EXPECTED_FACES))
def test_finds_every_face_in_real_photos_with_ordered_landmarks(detector, photos, name):
    det, d = _detect(detector, photos, name)
    assert len(det) == EXPECTED_FACES[name], f"{name}: {len(det)} faces, scores {det.scores}"
    for box, lm in zip(det.boxes, det.landmarks):
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= d.width and 0 <= y1 < y2 <= d.height
        le, re, nose, ml, mr = lm
        assert le[0] < re[0] and ml[0] < mr[0], "left/right as seen in the image"
        assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1]), "eyes above nose above mouth"


def test_detection_does_not_depend_on_batch_neighbours(detector, photos):
    names = ["t1.jpg", "astronaut.png", "obama2.jpg", "Tom_Hanks_54745.png", "obama.jpg", "biden.jpg"]
    decoded = [decode_image(photos[n].read_bytes(), DecodeConfig()) for n in names]
    batched = detector.detect([d.pixels for d in decoded])
    for d, b in zip(decoded, batched):
        s = detector.detect([d.pixels])[0]
        assert len(b) == len(s)
        np.testing.assert_allclose(b.boxes, s.boxes, atol=1e-3)
        np.testing.assert_allclose(b.scores, s.scores, atol=1e-4)


def test_recall_on_pascal_dev_set(detector, shared_dir):
    """All 18 hand-marked faces at the default threshold (dlib's matching rule, as for the others)."""
    root = shared_dir / "data" / "pascal_faces_dev"
    pairs = []
    for file, gt in load_imglab(root / "training.xml").items():
        det, _ = _detect(detector, {file: root / file}, file)
        pairs.append((gt, det.boxes))
    report = recall_report(pairs)
    assert report.recall == 1.0, str(report)


def test_a_file_that_is_not_the_library_fails_clearly(photos):
    with pytest.raises(ValueError, match=r"astronaut\.png: not a libfacedetection library"):
        create_model("yunet", kind="detector", weights=photos["astronaut.png"])
