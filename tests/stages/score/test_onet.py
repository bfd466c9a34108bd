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


def test_a_faded_photos_faces_are_faces(photo_faces):
    """The verifier sees a faded or tinted photo's faces (a crowd in a washed-out print, a duotone)
    with the contrast of an ordinary photo: without that, they were called non-faces
    (bench/RESULTS.md, "group photos"). Crops of ordinary contrast reach it unchanged."""
    from facepipe.stages.score.onet import stretched

    net = create_model("mtcnn_onet", kind="verifier")
    faces = np.concatenate([square_crops(pf.image, pf.boxes) for pf in photo_faces])
    grey = faces.astype(np.float32).mean(-1).reshape(len(faces), -1)
    ordinary = np.percentile(grey, 99, axis=1) - np.percentile(grey, 1, axis=1) >= 160
    assert ordinary.sum() >= 10 and (stretched(faces[ordinary]) == faces[ordinary]).all()
    # a washed-out sepia print: 15% of the contrast, pale (as the crowd of a Commons photo was)
    sepia = np.array([1.0, 0.95, 0.8], np.float32)
    faded = np.clip((faces.astype(np.float32).mean(-1, keepdims=True) * 0.15 + 200) * sepia, 0, 255).astype(np.uint8)
    assert (net.face_logits(faded) > 1).all(), np.round(net.face_logits(faded), 2)
    with torch.no_grad():  # ONet on the faded crops as they are: some are not faces to it
        logits = net((torch.from_numpy(faded).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125)[0]
    assert ((logits[:, 1] - logits[:, 0]).numpy() <= 1).sum() >= 2


def test_a_tinted_photos_faces_are_faces(photo_faces):
    """The verifier also takes each crop in grey and keeps the larger opinion: ONet learnt faces
    in colour, and doubts faces of a green duotone print (as the Lords of a parliament's photo
    were; bench/RESULTS.md, "group photos") that it takes in grey. Never below the colour opinion."""
    from facepipe.stages.score.onet import stretched

    net = create_model("mtcnn_onet", kind="verifier")
    faces = np.concatenate([square_crops(pf.image, pf.boxes) for pf in photo_faces])
    grey = faces.astype(np.float32).mean(-1, keepdims=True) / 255
    dark, light = np.array([20, 60, 30]), np.array([190, 235, 170])
    duotone = np.clip(dark + grey * (light - dark), 0, 255).astype(np.uint8)
    with torch.no_grad():  # the colour crops alone, as the verifier saw them before
        logits = net((torch.from_numpy(stretched(duotone)).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125)[0]
    colour = (logits[:, 1] - logits[:, 0]).numpy()
    both = net.face_logits(duotone)
    assert (colour <= 1).sum() >= 1 and (both > 2).all(), (np.round(colour, 2), np.round(both, 2))
    assert (both >= colour - 1e-4).all() and (net.face_logits(faces) >= 0).all()
