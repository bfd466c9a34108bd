"""RetinaFace from the two real MobileNet-0.25 checkpoints in ../shared, the ResNet-50 layout,
configs, strict loading, and anchor decoding against the reference formulas."""

import json

import numpy as np
import pytest
import torch

from facepipe.registry import create_model
from facepipe.stages.decode import DecodeConfig, decode_image
from facepipe.stages.detect.retinaface import PRESETS, RetinaFace, RetinaFaceConfig
from facepipe.tools.demo import EXPECTED_FACES
from facepipe.tools.evaluate import detect_for_eval, evaluate, load_imglab_gt

CHECKPOINTS = {  # file -> the preset that describes it (../shared/README.md)
    "mnet025_face_detector_1mb.pth": "mnet025_1mb",
    "mnet025_pytorch_retinaface_3c31dcd.pth": "mnet025_relu",
}


@pytest.fixture(scope="module", params=sorted(CHECKPOINTS))
def checkpoint(request, shared_dir):
    path = shared_dir / "data" / "retinaface" / request.param
    return (
        path,
        CHECKPOINTS[request.param],
        create_model("retinaface", path, kind="detector", config=CHECKPOINTS[request.param]),
    )


def test_real_checkpoints_find_every_face_with_ordered_landmarks(checkpoint, photos):
    _, preset, det = checkpoint
    assert det.model_id.startswith(f"retinaface:{preset}@")
    for name, n in EXPECTED_FACES.items():
        d = decode_image(photos[name].read_bytes(), DecodeConfig())
        (r,) = det.detect([d.pixels])
        assert len(r) == n, f"{preset} {name}: {len(r)} faces, scores {r.scores}"
        for lm in r.landmarks:
            le, re, nose, ml, mr = lm
            assert le[0] < re[0] and ml[0] < mr[0], "left/right as seen in the image"
            assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1]), "eyes above nose above mouth"


def test_recall_and_precision_on_the_pascal_dev_set(checkpoint, shared_dir):
    """Measured (bench/RESULTS.md): both find 18/18 at score 0.5; the 1 MB model adds 3 false
    positives (precision 0.857), the first Pytorch_Retinaface release none."""
    _, preset, det = checkpoint
    root = shared_dir / "data" / "pascal_faces_dev"
    gt = load_imglab_gt(root / "training.xml")
    r = evaluate(gt, detect_for_eval(det, root, sorted(gt)), "dlib")
    print(f"{preset}: {r.row()}")
    assert r.recall == 1.0 and r.precision >= 0.85 and r.ap >= 0.99, r.row()


def test_the_wrong_activation_config_shows_in_the_numbers(shared_dir):
    """The weights cannot tell ReLU from LeakyReLU(0.1): loading the ReLU checkpoint with the
    LeakyReLU preset works but detects worse -- why --detector-config exists."""
    root = shared_dir / "data" / "pascal_faces_dev"
    gt = load_imglab_gt(root / "training.xml")
    path = shared_dir / "data" / "retinaface" / "mnet025_pytorch_retinaface_3c31dcd.pth"
    right = evaluate(
        gt, detect_for_eval(create_model("retinaface", path, config="mnet025_relu"), root, sorted(gt)), "iou"
    )
    wrong = evaluate(gt, detect_for_eval(create_model("retinaface", path, config="mnet025"), root, sorted(gt)), "iou")
    assert wrong.precision < right.precision and wrong.ap < right.ap


def test_resnet50_layout_has_the_reference_keys(tmp_path):
    sd = RetinaFace(PRESETS["r50"]).state_dict()
    expect = {
        "body.conv1.weight": (64, 3, 7, 7),
        "body.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "body.layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fpn.output1.0.weight": (256, 512, 1, 1),
        "fpn.output3.0.weight": (256, 2048, 1, 1),
        "fpn.merge1.1.running_var": (256,),
        "ssh1.conv3X3.0.weight": (128, 256, 3, 3),
        "ssh3.conv7x7_3.1.weight": (64,),
        "ClassHead.0.conv1x1.weight": (4, 256, 1, 1),
        "BboxHead.2.conv1x1.bias": (8,),
        "LandmarkHead.1.conv1x1.weight": (20, 256, 1, 1),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith(("body.fc", "body.avgpool")) for k in sd)
    # a DataParallel checkpoint of that layout loads and runs
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "Resnet50_Final.pth")
    det = create_model("retinaface", tmp_path / "Resnet50_Final.pth", kind="detector", config="r50")
    assert det.model_id.startswith("retinaface:r50@")
    det.detect([np.zeros((100, 120, 3), np.uint8)])


def test_mismatched_checkpoint_and_config_name_the_keys(shared_dir):
    path = shared_dir / "data" / "retinaface" / "mnet025_face_detector_1mb.pth"
    with pytest.raises(
        ValueError,
        match=r"does not fit RetinaFace resnet50: missing keys: .*body\.conv1\.weight.*unexpected keys: .*body\.stage1",
    ):
        create_model("retinaface", path, config="r50")


def test_config_file_and_its_errors(tmp_path):
    f = tmp_path / "my_retina.json"
    f.write_text(json.dumps({"min_sizes": [[10, 20], [32, 64], [128, 256]], "leaky": 0.0, "neck_leaky": 0.0}))
    label, cfg = RetinaFaceConfig.load(str(f))
    assert label == "my_retina" and cfg == PRESETS["mnet025_1mb"]
    f.write_text(json.dumps({"anchors": [1]}))
    with pytest.raises(ValueError, match=r"unknown fields \['anchors'\]"):
        RetinaFaceConfig.load(str(f))
    with pytest.raises(ValueError, match="neither a preset"):
        RetinaFaceConfig.load("mnet999")


def test_anchors_and_decoding_follow_the_reference_formulas():
    """Priors in the heads' order (level, row, column, size) and the box/landmark decoding of
    Pytorch_Retinaface's box_utils, written out for single anchors."""
    m = RetinaFace(PRESETS["mnet025_1mb"])
    pri = m.priors(64, 96, torch.device("cpu"))
    assert len(pri) == 2 * (8 * 12 + 4 * 6 + 2 * 3)
    np.testing.assert_allclose(pri[:3].numpy(), [[4, 4, 10, 10], [4, 4, 20, 20], [12, 4, 10, 10]])
    np.testing.assert_allclose(pri[2 * 8 * 12].numpy(), [8, 8, 32, 32])  # first anchor of level 2
    A = len(pri)
    loc, ldm = torch.zeros(1, A, 4), torch.zeros(1, A, 10)
    prob = torch.zeros(1, A)
    k = 2 * 8 * 12 + 5  # an anchor of level 2
    prob[0, k] = 0.9
    loc[0, k] = torch.tensor([1.0, -1.0, 0.5, 0.0])
    ldm[0, k, :2] = torch.tensor([2.0, 3.0])
    c = m.decode((loc, prob, ldm, (64, 96)), 0.5)
    cx, cy, s, _ = pri[k].tolist()
    w = s * np.exp(0.5 * 0.2)
    np.testing.assert_allclose(
        c.boxes[0].numpy(),
        [cx + 0.1 * s - w / 2, cy - 0.1 * s - s / 2, cx + 0.1 * s + w / 2, cy - 0.1 * s + s / 2],
        rtol=1e-6,
    )
    np.testing.assert_allclose(c.landmarks[0, 0].numpy(), [cx + 0.2 * s, cy + 0.3 * s], rtol=1e-6)
    assert c.scores.tolist() == pytest.approx([0.9]) and c.image_index.tolist() == [0]
