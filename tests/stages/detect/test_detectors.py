"""What every offline detector must do, the default (YuNet) and CenterFace alike: find every face of
the real photos with landmarks in order, give an image the same faces whatever it is batched with
(so coordinates never depend on how Ray slices blocks), and find all 18 hand-marked faces of the
dev set at the default threshold (dlib's matching rule)."""

import numpy as np
import pytest

from facepipe.registry import create_model
from facepipe.stages.decode import DecodeConfig, decode_image
from facepipe.tools.demo import EXPECTED_FACES
from facepipe.tools.evaluate import load_imglab, recall_report

DETECTORS = ["yunet", "centerface"]


@pytest.fixture(scope="module", params=DETECTORS)
def detector(request):
    return create_model(request.param, kind="detector")


def _detect(detector, photos, name):
    d = decode_image(photos[name].read_bytes(), DecodeConfig())
    return detector.detect([d.pixels])[0].scaled(d.scale_x, d.scale_y), d


@pytest.mark.parametrize("name", sorted(EXPECTED_FACES))
def test_finds_every_face_in_real_photos_with_ordered_landmarks(detector, photos, name):
    det, d = _detect(detector, photos, name)
    assert len(det) == EXPECTED_FACES[name], f"{detector.model_id} {name}: {len(det)} faces, scores {det.scores}"
    for box, lm in zip(det.boxes, det.landmarks):
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= d.width and 0 <= y1 < y2 <= d.height
        le, re, nose, ml, mr = lm
        assert le[0] < re[0] and ml[0] < mr[0], "left/right as seen in the image"
        assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1]), "eyes above nose above mouth"
        # A partial face's hidden eye may fall just outside the (clipped) box; the rest lie inside.
        inside = (lm[:, 0] >= x1 - 2) & (lm[:, 0] <= x2 + 2) & (lm[:, 1] >= y1 - 2) & (lm[:, 1] <= y2 + 2)
        assert inside.sum() >= (4 if "partial" in name else 5), f"{name}: landmarks {lm} outside box {box}"


def test_detection_does_not_depend_on_batch_neighbours(detector, photos):
    """A small image batched with a large one must give what it gives alone (no padding drift)."""
    names = ["t1.jpg", "astronaut.png", "obama2.jpg", "Tom_Hanks_54745.png", "obama.jpg", "biden.jpg"]
    decoded = [decode_image(photos[n].read_bytes(), DecodeConfig()) for n in names]
    batched = detector.detect([d.pixels for d in decoded])
    for d, b in zip(decoded, batched):
        s = detector.detect([d.pixels])[0]
        assert len(b) == len(s)
        np.testing.assert_allclose(b.boxes, s.boxes, atol=1e-3)
        np.testing.assert_allclose(b.landmarks, s.landmarks, atol=1e-3)
        np.testing.assert_allclose(b.scores, s.scores, atol=1e-3)


def test_recall_on_pascal_dev_set(detector, shared_dir):
    root = shared_dir / "data" / "pascal_faces_dev"
    pairs = []
    for file, gt in load_imglab(root / "training.xml").items():
        det, _ = _detect(detector, {file: root / file}, file)
        pairs.append((gt, det.boxes))
    report = recall_report(pairs)
    assert report.recall == 1.0, f"{detector.model_id}: {report}"
