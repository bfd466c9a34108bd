"""Quality features of a detection (facepipe.stages.align.quality): the detector's landmarks sit where a
face's do on the aligned chip for real faces and not for boxes on things that are not faces; the
chip's sharpness drops with blur, its detail with blur but not with contrast; all are deterministic
functions of the pixels."""

import cv2
import numpy as np
from skimage import data as skd

from facepipe.registry import create_model
from facepipe.stages.align.chips import DLIB_MEAN_FACE_DETECTOR_5, similarity_transform
from facepipe.stages.align.quality import detail, landmark_offsets, sharpness
from facepipe.stages.align.stage import align_batch


def _offsets(image, boxes, landmarks):
    sp = create_model("dlib_shape_predictor_5", kind="landmarks")
    net_chip = create_model("dlib_resnet", kind="embedder").chip
    chips, quality = align_batch([image], [boxes], [landmarks], net_chip, "dlib_sp5", sp)
    return chips, quality


def test_real_faces_have_small_offsets_and_a_box_on_coffee_does_not(photo_faces):
    offsets = []
    for pf in photo_faces:
        _, q = _offsets(pf.image, pf.boxes, pf.landmarks)
        offsets += list(np.linalg.norm(q[:, :10], axis=1))
    assert len(offsets) >= 15 and np.median(offsets) < 0.2 and max(offsets) < 0.5, np.round(offsets, 3)
    # the same detections' boxes and landmarks laid on a photo with no face: the shape predictor
    # finds its "face" elsewhere than the detector's landmarks say
    coffee = cv2.resize(skd.coffee(), (1200, 800))
    pf = max(photo_faces, key=lambda p: len(p.boxes))
    scale = min(1.0, 700 / max(pf.image.shape[:2]))
    _, q = _offsets(coffee, pf.boxes * scale, pf.landmarks * scale)
    assert np.median(np.linalg.norm(q[:, :10], axis=1)) > np.median(offsets), q[:, :10]


def test_offsets_are_zero_when_the_landmarks_are_the_template():
    """Landmarks placed exactly where the template puts them (any similarity) have offsets 0."""
    rng = np.random.default_rng(0)
    points = np.array([[[0.3, 0.2], [0.7, 0.2], [0.1, 0.25], [0.9, 0.25], [0.5, 0.6]]]) * 100 + 40
    template = points[0] / 100.0
    t = similarity_transform(template[None], points)[0]
    lm = DLIB_MEAN_FACE_DETECTOR_5 @ t[:, :2].T + t[:, 2]
    off = landmark_offsets(lm[None], points, template, DLIB_MEAN_FACE_DETECTOR_5)
    assert off.shape == (1, 10) and np.abs(off).max() < 1e-5
    noisy = landmark_offsets(lm[None] + rng.normal(0, 5, (1, 5, 2)), points, template, DLIB_MEAN_FACE_DETECTOR_5)
    assert np.abs(noisy).max() > 0.01
    assert landmark_offsets(np.zeros((0, 5, 2)), np.zeros((0, 5, 2)), template, template).shape == (0, 10)


def test_sharpness_falls_with_blur_and_is_deterministic(photo_faces):
    chips, _ = _offsets(photo_faces[0].image, photo_faces[0].boxes, photo_faces[0].landmarks)
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 3) for c in chips])
    assert (sharpness(blurred) < sharpness(chips) - 1).all()
    assert np.array_equal(sharpness(chips), sharpness(chips.copy()))


def test_detail_falls_with_blur_and_not_with_a_faded_print(photo_faces):
    """Every real face chip of the test photos (>= 40 px, as the identities use) has more detail
    than the outlier stage's floor; the same chips blurred by 3% of the face's width (3 px of the
    chip's 100 px face box) -- where dlib's embedding drifts as far as two photos of one person --
    fall under it; a faded print of them (a quarter of the contrast) keeps its detail where its
    sharpness drops (the washed-out prints of the group photos)."""
    from facepipe.stages.score.detail import MIN_DETAIL

    chips = []
    for pf in photo_faces:
        wide = pf.boxes[:, 2] - pf.boxes[:, 0] >= 40
        chips.append(_offsets(pf.image, pf.boxes[wide], pf.landmarks[wide])[0])
    chips = np.concatenate(chips)
    assert len(chips) >= 10 and (detail(chips) > MIN_DETAIL + 0.5).all(), detail(chips)
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 3) for c in chips])
    assert (detail(blurred) < MIN_DETAIL).all(), detail(blurred)
    faded = np.clip(128 + (chips.astype(np.float32) - 128) / 4, 0, 255).round().astype(np.uint8)
    assert (detail(faded) > detail(chips) - 0.1).all()  # (a little higher: its grey steps are coarser)
    assert (sharpness(faded) < sharpness(chips) - 1).all()
    flat = np.full((1, 150, 150, 3), 128, np.uint8)
    assert detail(flat)[0] < MIN_DETAIL and np.array_equal(detail(chips), detail(chips.copy()))
