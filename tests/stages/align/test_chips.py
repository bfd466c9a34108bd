"""Face chips: dlib's get_face_chip reproduced pixel for pixel; ArcFace template geometry."""

import cv2
import numpy as np
import pytest

from facepipe.registry import get_model_spec
from facepipe.stages.align.chips import ARCFACE_TEMPLATE_112, dlib_face_chips, sample_chips, template_chip_regions
from facepipe.stages.align.shape_predictor import dlib_rects


@pytest.mark.parametrize("upscale", [1, 3])
def test_dlib_chips_equal_get_face_chip(photo_faces, dlib, upscale):
    """From dlib's own landmarks, our chips equal dlib.get_face_chip(size=150, padding=0.25) up to
    1 grey level of rounding; x3 upscaled photos make faces large enough for dlib's 1-2 level
    anti-aliasing pyramid, which the port reproduces too."""
    ref = dlib.shape_predictor(str(get_model_spec("dlib_shape_predictor_5").weights.locate()))
    worst, mean = 0, []
    for pf in photo_faces:
        img = (
            pf.image
            if upscale == 1
            else cv2.resize(pf.image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        )
        shapes = [ref(img, dlib.rectangle(*map(int, r))) for r in dlib_rects(pf.boxes * upscale)]
        pts = np.array([[[s.part(i).x, s.part(i).y] for i in range(5)] for s in shapes], np.float32)
        ours = dlib_face_chips(img, pts)
        for s, c in zip(shapes, ours):
            d = np.abs(dlib.get_face_chip(img, s, size=150, padding=0.25).astype(int) - c)
            worst = max(worst, int(d.max()))
            mean.append(d.mean())
    assert worst <= 1 and np.mean(mean) < 0.02, (worst, np.mean(mean))


def test_arcface_template_landmarks_give_the_identity_warp():
    """Landmarks already on the ArcFace template (in a 112 px image) cut that image unchanged."""
    img = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    regions = template_chip_regions(img, ARCFACE_TEMPLATE_112[None])
    np.testing.assert_allclose(regions[0].M, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    chip = sample_chips(regions, 112)[0]
    assert (chip[:111, :111] == img[:111, :111]).all()  # last row/column: no right/bottom neighbour, 0 as in dlib


def test_arcface_chip_undoes_rotation_and_scale():
    """A face rotated by 30 degrees and scaled by 2 maps its landmarks back onto the template."""
    a, s = np.deg2rad(30), 2.0
    R = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lm = ARCFACE_TEMPLATE_112 @ R.T + [300, 200]
    (region,) = template_chip_regions(np.zeros((600, 600, 3), np.uint8), lm[None])
    M = region.M  # chip -> (pyramid-reduced) crop pixels: a rotation by 30 degrees, scale 2 / 2**levels
    assert np.arctan2(M[1, 0], M[0, 0]) == pytest.approx(a, abs=1e-6)
    assert np.hypot(M[0, 0], M[1, 0]) in (pytest.approx(2.0, rel=1e-3), pytest.approx(1.0, rel=1e-2))
