"""Decode: every odd or broken input becomes RGB pixels or a recorded failure, never an exception."""

import numpy as np
import pytest
from PIL import Image

from facepipe.stages.decode import DecodeConfig, DecodeFailure, decode_batch, decode_image
from testbed import corpus


@pytest.fixture(scope="module")
def files(photos):
    return corpus.build(photos["astronaut.png"])


def test_each_corpus_file_decodes_or_fails_with_its_status(files):
    for name, (data, expected) in files.items():
        try:
            d = decode_image(data, DecodeConfig(long_side=0))
            status = "ok"
        except DecodeFailure as f:
            status = f.status
            assert f.message and "\n" not in f.message, name
        assert status == expected, f"{name}: got {status}, expected {expected}"
        if status == "ok":
            assert d.pixels.dtype == np.uint8 and d.pixels.ndim == 3 and d.pixels.shape[2] == 3, name


def test_exif_orientation_is_applied(files, photos):
    upright = np.asarray(Image.open(photos["astronaut.png"]).convert("RGB"), np.float32)
    d = decode_image(files["exif_rotated.jpg"][0], DecodeConfig(long_side=0))
    assert (d.width, d.height) == (upright.shape[1], upright.shape[0])
    assert np.abs(d.pixels.astype(np.float32) - upright).mean() < 8  # JPEG noise only


def test_16bit_and_cmyk_keep_their_tones(files, photos):
    gray = np.asarray(Image.open(photos["astronaut.png"]).convert("L"), np.float32)
    d16 = decode_image(files["gray16.png"][0], DecodeConfig(long_side=0)).pixels
    assert np.abs(d16[..., 0].astype(np.float32) - gray).max() <= 1  # scaled, not clipped at 255
    rgb = np.asarray(Image.open(photos["astronaut.png"]).convert("RGB"), np.float32)
    cmyk = decode_image(files["cmyk.jpg"][0], DecodeConfig(long_side=0)).pixels.astype(np.float32)
    assert np.abs(cmyk - rgb).mean() < 10  # not inverted


def test_resize_to_long_side_reports_scale(photos):
    data = photos["obama3.jpg"].read_bytes()  # 1434 x 2333
    d = decode_image(data, DecodeConfig(long_side=640))
    assert max(d.pixels.shape[:2]) == 640
    assert (d.width, d.height) == (1434, 2333)
    assert d.scale_x == pytest.approx(d.pixels.shape[1] / 1434) and d.scale_y == pytest.approx(d.pixels.shape[0] / 2333)


def test_min_face_decodes_large_photos_bigger():
    """--min-face: a face of min_face original pixels stays min_face_input pixels wide at the
    detector; the fixed long side is a floor, full resolution the ceiling."""
    cfg = DecodeConfig(long_side=640, min_face=40, min_face_input=24)
    assert cfg.detector_long_side(4000, 3000) == 2400  # 0.6 x
    assert cfg.detector_long_side(1000, 800) == 640  # 0.6 x would be below the floor
    assert cfg.detector_long_side(300, 200) == 0  # smaller than the floor: native size, as before
    assert (
        DecodeConfig(long_side=640, min_face=20, min_face_input=24).detector_long_side(4000, 3000) == 0
    )  # 1.2 x: full resolution
    assert DecodeConfig(long_side=640).detector_long_side(4000, 3000) == 640  # off by default
    assert DecodeConfig(long_side=0, min_face=40).detector_long_side(4000, 3000) == 0


def test_min_face_reaches_jpeg_decode(photos):
    import cv2

    big = cv2.resize(np.asarray(Image.open(photos["astronaut.png"]).convert("RGB")), (3000, 3000))
    data = cv2.imencode(".jpg", big)[1].tobytes()
    d = decode_image(data, DecodeConfig(long_side=640, min_face=48, min_face_input=24))
    assert d.pixels.shape[:2] == (1500, 1500) and d.scale_x == pytest.approx(0.5)


def test_small_images_are_not_upscaled_by_default(photos):
    d = decode_image(photos["Tom_Hanks_54745.png"].read_bytes(), DecodeConfig(long_side=640))
    assert d.pixels.shape[:2] == (112, 112) and d.scale_x == 1.0


def test_pixel_guard_is_configurable(photos):
    with pytest.raises(DecodeFailure) as e:
        decode_image(photos["astronaut.png"].read_bytes(), DecodeConfig(max_pixels=1000))
    assert e.value.status == "too_large" and "1000" in e.value.message


def test_batch_keeps_every_row_and_records_read_errors(files):
    names = list(files)
    batch = {
        "image_id": np.array(names + ["unreadable"], dtype=object),
        "source_uri": np.array(names + ["s3://b/gone.jpg"], dtype=object),
        "data": np.array([files[n][0] for n in names] + [None], dtype=object),
        "read_error": np.array([None] * len(names) + ["object disappeared"], dtype=object),
    }
    out = decode_batch(batch, DecodeConfig()).to_pydict()
    assert out["image_id"] == names + ["unreadable"]
    assert out["status"] == [files[n][1] for n in names] + ["read_error"]
    assert out["error"][-1] == "object disappeared"
