"""Reader for dlib's binary serialization format (``dlib::serialize``), enough for its model files.

dlib writes no type tags; a reader must know what comes next. The primitives:

- integers: one control byte (low 4 bits = number of value bytes, bit 7 = negative), then the
  absolute value little-endian;
- floating point: an integer mantissa and an integer exponent, value = mantissa * 2**exponent;
- bool: one ASCII byte, ``'1'`` or ``'0'``;
- string: integer length, then the bytes;
- dnn tensors: integer version (2), four integer dims (num_samples, k, nr, nc), then raw
  little-endian float32 values;
- ``matrix<float,0,1>`` / ``matrix<float>``: integer rows and cols written negated (dlib's marker
  for the current format), then each element as a dlib float.

Pure Python + numpy, no dlib: this is how facepipe loads dlib's models without dlib at run time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


class DlibFormatError(ValueError):
    """The bytes do not follow the layout the reader expected; says where."""


class DlibReader:
    """Sequential reader over the bytes of one dlib-serialized file."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.name = name

    @classmethod
    def open(cls, path: str | Path) -> "DlibReader":
        return cls(Path(path).read_bytes(), str(path))

    def error(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: {what} at byte {self.pos}")

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.error(f"unexpected end of file reading {n} bytes")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def int(self) -> int:
        ctrl = self._take(1)[0]
        n = ctrl & 0x0F
        if n > 8 or ctrl & 0x70:
            raise self.error(f"bad integer control byte {ctrl:#04x}")
        v = int.from_bytes(self._take(n), "little")
        return -v if ctrl & 0x80 else v

    def ints(self, n: int) -> np.ndarray:
        """``n`` consecutive integers as an int64 array (a tight loop: model files hold millions)."""
        data, pos, end = self.data, self.pos, len(self.data)
        out = [0] * n
        for i in range(n):
            if pos >= end:
                self.pos = pos
                raise self.error("unexpected end of file in an integer run")
            ctrl = data[pos]
            k = ctrl & 0x0F
            v = int.from_bytes(data[pos + 1 : pos + 1 + k], "little")
            out[i] = -v if ctrl & 0x80 else v
            pos += 1 + k
        self.pos = pos
        return np.array(out, np.int64)

    def floats(self, n: int) -> np.ndarray:
        """``n`` consecutive dlib floats as a float64 array."""
        me = self.ints(2 * n).reshape(n, 2)
        return np.ldexp(me[:, 0].astype(np.float64), me[:, 1])

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return math.ldexp(float(mantissa), exponent)

    def bool(self) -> bool:
        c = bytes(self._take(1))
        if c not in (b"0", b"1"):
            raise self.error(f"bad bool byte {c!r}")
        return c == b"1"

    def str(self) -> str:
        n = self.int()
        if not 0 <= n < 1 << 20:
            raise self.error(f"implausible string length {n}")
        return bytes(self._take(n)).decode("latin-1")

    def peek_str(self) -> str | None:
        """The string at the current position if one plausibly starts there, without consuming it."""
        save = self.pos
        try:
            s = self.str()
        except DlibFormatError:
            return None
        finally:
            self.pos = save
        return s if s and s.replace("_", "").isalnum() else None

    def expect_str(self, *allowed: str) -> str:
        s = self.str()
        if s not in allowed:
            raise self.error(f"expected {' or '.join(map(repr, allowed))}, found {s!r}")
        return s

    def tensor(self) -> np.ndarray:
        """A dnn tensor as a float32 array of shape (num_samples, k, nr, nc)."""
        version = self.int()
        if version != 2:
            raise self.error(f"unsupported tensor version {version}")
        shape = tuple(self.int() for _ in range(4))
        n = int(np.prod(shape))
        a = np.frombuffer(self._take(4 * n), dtype="<f4").astype(np.float32)
        return a.reshape(shape)

    def float_matrix(self) -> np.ndarray:
        """A ``dlib::matrix<float>`` (any shape) as a float32 array of shape (rows, cols)."""
        rows, cols = self.int(), self.int()
        if rows > 0 or cols > 0:  # old format wrote positive sizes; current writes negated ones
            raise self.error(f"unsupported matrix header ({rows}, {cols})")
        rows, cols = -rows, -cols
        return self.floats(rows * cols).astype(np.float32).reshape(rows, cols)
