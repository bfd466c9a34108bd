"""YuNet in plain torch with the weights shipped in the package (facepipe/weights/yunet.pt): they
are libfacedetection's, bit for bit, and the module finds the same faces, scores and landmarks as
the library's own C++ detector (what every detector must also do is in test_detectors.py) -- the
default detector must be right before it is fast. The reference is the ``yuface`` wheel, which
exists for CPython 3.10/3.11 on Linux x86_64 only (a test extra there); elsewhere the reference
tests skip and the shipped weights are still checked by their sha256 (test_registry.py)."""

import numpy as np
import pytest
import torch

from facepipe.registry import create_model, get_model_spec, resolve_weights
from facepipe.stages.decode import DecodeConfig, decode_image
from facepipe.stages.detect.stage import DetectConfig
from facepipe.stages.detect.yunet import YuNet, export_library_weights
from facepipe.tools.demo import EXPECTED_FACES


@pytest.fixture(scope="module")
def detector():
    return create_model("yunet", kind="detector")


def _yuface():
    return pytest.importorskip("yuface", reason="yuface has wheels for CPython 3.10/3.11 on Linux x86_64 only")


def _library():
    from pathlib import Path

    return Path(_yuface().__file__).parent / "libfacedetection.so"


def test_yunet_is_the_default_detector_and_its_weights_ship_with_facepipe():
    """No platform-specific package is needed for the default detector: the weights are a file of
    facepipe's own (so Python 3.12+, ARM and macOS run it)."""
    assert DetectConfig().name == "yunet"
    weights = get_model_spec("yunet").weights
    assert weights.package == "facepipe" and "BSD-3-Clause" in weights.license
    path, _ = resolve_weights("yunet")
    assert (path.parent / "LICENSE-libfacedetection").read_text().count("3-clause BSD License") == 1


def test_the_shipped_weights_are_libfacedetections_bit_for_bit(tmp_path):
    """facepipe/weights/yunet.pt is what export_library_weights reads out of yuface's library:
    every tensor equal, and the file itself byte-identical when exported under the same name."""
    library = _library()
    shipped, _ = resolve_weights("yunet")
    out = tmp_path / shipped.name
    export_library_weights(library, out)
    ours = torch.load(shipped, weights_only=True)
    theirs = torch.load(out, weights_only=True)
    assert ours.keys() == theirs.keys() == YuNet().state_dict().keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
    assert out.read_bytes() == shipped.read_bytes()


def test_a_libfacedetection_library_is_taken_as_weights_too():
    from_library = create_model("yunet", kind="detector", weights=_library())
    shipped = create_model("yunet", kind="detector")
    for k, v in shipped.state_dict().items():
        assert torch.equal(v, from_library.state_dict()[k]), k


@pytest.mark.parametrize("name", sorted(EXPECTED_FACES))
def test_matches_libfacedetection_itself_on_real_photos(detector, photos, name):
    """Reference: yuface's C++ ``detect`` (libfacedetection, the same weights) on the same BGR
    pixels. It reports integer pixels and score percent, and NMS at IoU 0.45."""
    yuface = _yuface()
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


def test_a_file_that_is_not_yunet_weights_fails_clearly(photos, tmp_path):
    with pytest.raises(ValueError, match=r"astronaut\.png: not a PyTorch checkpoint for YuNet"):
        create_model("yunet", kind="detector", weights=photos["astronaut.png"])
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match=r"other\.pt does not fit YuNet.*missing keys: heads"):
        create_model("yunet", kind="detector", weights=other)
    fake_elf = tmp_path / "libfake.so"
    fake_elf.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(ValueError, match=r"libfake\.so: not a libfacedetection library"):
        create_model("yunet", kind="detector", weights=fake_elf)
