"""CenterFace in plain torch: parity with onnxruntime, faces on real photos, recall on the dev set."""

import numpy as np
import pytest
import torch

from facepipe.registry import create_model, get_model_spec, list_models
from facepipe.stages.decode import DecodeConfig, decode_image


@pytest.fixture(scope="module")
def detector():
    return create_model("centerface", kind="detector")


@pytest.fixture(scope="module")
def ort_session():
    """onnxruntime on the same .onnx -- a test-only reference; the job never imports it."""
    import onnx
    import onnxruntime as ort  # test extra: its absence is a failure
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(get_model_spec("centerface").weights.locate()))
    # The graph lists its initializers as inputs too: keep their dims, make the image input dynamic.
    shape = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]
    inputs = {i.name: shape(i) for i in model.graph.input} | {"input.1": ["B", 3, "H", "W"]}
    outputs = {
        "537": ["B", 1, "h", "w"],
        "538": ["B", 2, "h", "w"],
        "539": ["B", 2, "h", "w"],
        "540": ["B", 10, "h", "w"],
    }
    model = update_inputs_outputs_dims(model, inputs, outputs)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _input(photos, names, h, w):
    import cv2

    x = np.stack(
        [cv2.resize(decode_image(photos[n].read_bytes(), DecodeConfig(long_side=0)).pixels, (w, h)) for n in names]
    )
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(np.float32))


@pytest.mark.parametrize("hw", [(320, 320), (480, 640), (640, 416)])
def test_raw_outputs_match_onnxruntime_single_and_batched(detector, ort_session, photos, hw):
    for names in (["astronaut.png"], ["t1.jpg", "obama.jpg", "grace_hopper.jpg"]):
        x = _input(photos, names, *hw)
        ref = ort_session.run(["537", "538", "539", "540"], {"input.1": x})
        with torch.inference_mode():
            out = detector(torch.from_numpy(x))
        for name, r, o in zip(("heatmap", "size", "offset", "landmarks"), ref, out):
            assert o.shape == r.shape
            diff = float(np.abs(o.numpy() - r).max())
            assert diff <= 1e-4, f"{name} differs from onnxruntime by {diff} at {hw}, batch {len(names)}"


def test_registry_names_known_detectors_on_unknown_name():
    assert "centerface" in list_models("detector")
    with pytest.raises(KeyError, match="known: .*centerface"):
        create_model("no-such-detector", kind="detector")


def test_wrong_weights_file_fails_naming_the_mismatch(tmp_path, photos):
    with pytest.raises(ValueError, match=r"astronaut\.png is not an ONNX model"):
        create_model("centerface", kind="detector", weights=photos["astronaut.png"])


def test_min_face_finds_small_faces_in_large_photos(detector, photo_faces):
    """A 40 px face pasted into a 12 MP photo is 6 px at the 640 px default input -- lost; with
    ``min_face=40`` the photo is detected at 0.6x and the face is found where it was pasted."""
    import cv2
    from skimage import data as skd

    from facepipe.stages.detect.stage import DetectConfig, detect_images
    from facepipe.tools.evaluate import iou_matrix

    obama = next(p for p in photo_faces if p.name == "obama.jpg")
    x1, y1, x2, y2 = obama.boxes[0].astype(int)
    m = (x2 - x1) // 2
    crop = obama.image[max(0, y1 - m) : y2 + m, max(0, x1 - m) : x2 + m]
    k = 40 / (x2 - x1)  # face 40 px wide
    crop = cv2.resize(crop, (round(crop.shape[1] * k), round(crop.shape[0] * k)), interpolation=cv2.INTER_AREA)
    bg = cv2.resize(skd.coffee(), (4000, 3000))  # 12 MP, no face of its own
    bg[2000 : 2000 + crop.shape[0], 3000 : 3000 + crop.shape[1]] = crop
    data = cv2.imencode(".jpg", bg[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()

    def boxes(cfg: DecodeConfig) -> np.ndarray:
        d = decode_image(data, cfg)
        (f,) = detect_images(detector, [d.pixels], [(d.scale_x, d.scale_y)], [(d.width, d.height)], DetectConfig())
        return f.boxes

    pasted = np.array([[3000, 2000, 3000 + crop.shape[1], 2000 + crop.shape[0]]], np.float32)
    hit = lambda b: len(b) > 0 and bool(iou_matrix(pasted, b).max() > 0.1)
    assert not hit(boxes(DecodeConfig()))
    found = boxes(DecodeConfig(min_face=40))
    assert hit(found) and len(found) == 1
