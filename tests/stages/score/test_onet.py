"""The face verifier (MTCNN's ONet, weights from facenet-pytorch): loads strictly, takes any
number of crops, is deterministic, says "face" for the real faces of the test photos and "not a
face" for crops of photos without people."""

import cv2
import numpy as np
import torch
from skimage import data as skd

from facepipe.registry import create_model
from facepipe.stages.score.onet import CROP, ONet, square_crops


def test_onet_shapes_and_square_crops():
    net = ONet().eval()
    logits, box, lm = net(torch.zeros(3, 3, CROP, CROP))
    assert logits.shape == (3, 2) and box.shape == (3, 4) and lm.shape == (3, 10)
    image = np.full((50, 80, 3), 200, np.uint8)
    crops = square_crops(image, np.array([[10, 10, 30, 40], [70, -5, 90, 20]], np.float32))
    assert crops.shape == (2, CROP, CROP, 3) and crops.dtype == np.uint8
    assert crops[1][:, -1].max() == 0  # the square runs past the image: zero there, never wrapped
    assert square_crops(image, np.zeros((0, 4))).shape == (0, CROP, CROP, 3)


def test_real_faces_are_faces_and_coffee_and_gravel_are_not(photo_faces):
    net = create_model("mtcnn_onet", kind="verifier")
    faces = np.concatenate([square_crops(pf.image, pf.boxes) for pf in photo_faces])
    logit = net.face_logits(faces)
    assert len(logit) >= 15 and (logit > 1).all(), np.round(logit, 2)
    rng = np.random.default_rng(0)
    others = []
    for img in (skd.coffee(), cv2.cvtColor(skd.gravel(), cv2.COLOR_GRAY2RGB), skd.rocket()):
        h, w = img.shape[:2]
        for _ in range(10):
            s = int(rng.integers(40, min(h, w) // 2))
            x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
            others.append(square_crops(img, np.array([[x, y, x + s, y + s]], np.float32))[0])
    non = net.face_logits(np.stack(others))
    assert np.median(non) < 0 < logit.min(), (np.round(non, 2), logit.min())
    assert np.array_equal(net.face_logits(faces), logit)  # deterministic
