"""dlib's serialization primitives decode as dlib writes them (hand-made bytes with known values)."""

import numpy as np
import pytest

from facepipe.dlib_format import DlibFormatError, DlibReader


def test_integers_floats_bools_strings():
    # 1, -28, 300 (two value bytes), 0; then 0.04 as (mantissa 0xa3d70a, exponent -28); '1'; "ab"
    data = (
        bytes([0x01, 0x01, 0x81, 0x1C, 0x02, 0x2C, 0x01, 0x01, 0x00, 0x03, 0x0A, 0xD7, 0xA3, 0x81, 0x1C])
        + b"1"
        + bytes([0x01, 0x02])
        + b"ab"
    )
    r = DlibReader(data)
    assert [r.int(), r.int(), r.int(), r.int()] == [1, -28, 300, 0]
    assert r.float() == pytest.approx(0.04, abs=1e-9)
    assert r.bool() is True and r.str() == "ab" and r.at_end


def test_integer_runs_match_single_reads():
    data = bytes([0x01, 0x05, 0x81, 0x05, 0x02, 0x00, 0x01, 0x00])
    assert DlibReader(data).ints(4).tolist() == [5, -5, 256, 0]


def test_tensor_is_raw_little_endian_float32():
    vals = np.arange(6, dtype="<f4")
    data = bytes([0x01, 0x02, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03, 0x01, 0x01]) + vals.tobytes()
    t = DlibReader(data).tensor()
    assert t.shape == (1, 2, 3, 1) and t.ravel().tolist() == vals.tolist()


def test_truncated_input_names_the_position():
    with pytest.raises(DlibFormatError, match="byte 1"):
        DlibReader(bytes([0x02, 0x01])).int()
    with pytest.raises(DlibFormatError, match="bool"):
        DlibReader(b"x").bool()
