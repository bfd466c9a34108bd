"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in plain torch.

The network (dlib's ``dnn_face_recognition_ex``: a 29-conv ResNet, 5.6M parameters, 128-d metric
embedding, 99.38% on LFW) is read from dlib's own file by :func:`read_dlib_dnn` -- no dlib at run
time -- and rebuilt layer by layer. What a port must reproduce to match dlib to float precision:

- input: the 150x150 RGB chip as (pixel - [122.782, 117.001, 104.298]) / 256, read from the file;
- convolutions with stride 2 have no padding (dlib's default), stride-1 3x3 ones pad by 1;
- the residual add (``add_prev``) of a downsampling block adds tensors of different channel count
  *and* spatial size: the output takes the larger of each and the missing parts count as zero
  (top-left aligned);
- ``affine`` layers (dlib's inference-time BatchNorm) are folded into the preceding convolution;
- the final ``fc`` stores its weights as (inputs, outputs).

Distances: Euclidean; dlib calls two faces the same person below 0.6 (the threshold its
``loss_metric`` was trained with, also stored in the file). Embeddings are not normalised; their
norm is about 0.4-0.5 on real faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from facepipe.dlib_format import DlibReader
from facepipe.registry import ModelSpec, Preprocess, WeightSource, register_model
from facepipe.stages.embed.base import ChipSpec, FaceEmbedder

#: The same-person Euclidean distance threshold of dlib's face descriptor.
DLIB_SAME_PERSON_THRESHOLD = 0.6
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)


@dataclass
class DnnLayer:
    """One computational layer of a dlib dnn file, as stored."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    params: dict = field(default_factory=dict)


@dataclass
class DlibDnn:
    loss: str
    loss_params: tuple[float, ...]
    input_kind: str
    input_mean: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[DnnLayer]  # input side first


def _alias(r: DlibReader) -> tuple[int, ...]:
    version = r.int()
    if version != 1:
        raise r.error(f"unsupported alias_tensor version {version}")
    return tuple(r.int() for _ in range(4))


def _read_layer(r: DlibReader) -> DnnLayer:
    tag = r.str()
    if tag == "con_4":
        params = r.tensor().reshape(-1)
        n, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
        fshape = _alias(r)
        _alias(r)  # biases: (1, n, 1, 1), implied by n
        for _ in range(4):  # learning-rate / weight-decay multipliers
            r.float()
        nw = int(np.prod(fshape))
        if fshape[0] != n or params.size != nw + n:
            raise r.error(f"con_4 filters {fshape} do not fit {params.size} parameters")
        return DnnLayer(
            "con",
            {
                "weight": params[:nw].reshape(fshape),
                "bias": params[nw:],
                "stride": (sy, sx),
                "padding": (py, px),
                "kernel": (nr, nc),
            },
        )
    if tag == "affine_":
        params = r.tensor().reshape(-1)
        gshape, _ = _alias(r), _alias(r)
        mode = r.int()
        k = int(np.prod(gshape))
        if params.size != 2 * k:
            raise r.error(f"affine_ params {params.size} do not fit gamma {gshape}")
        return DnnLayer("affine", {"gamma": params[:k], "beta": params[k:], "mode": mode})
    if tag == "relu_":
        return DnnLayer("relu")
    if tag in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        return DnnLayer(tag[:-2], {"kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)})
    if tag == "add_prev_":
        return DnnLayer("add_prev")
    if tag == "fc_2":
        n_out, n_in = r.int(), r.int()
        params = r.tensor().reshape(-1)
        _alias(r), _alias(r)  # weights (n_in, n_out), biases: shapes implied by n_in, n_out
        bias_mode = r.int()  # 0: has bias, 1: no bias
        for _ in range(4):
            r.float()
        nw = n_in * n_out
        return DnnLayer(
            "fc", {"weight": params[:nw].reshape(n_in, n_out), "bias": params[nw:] if bias_mode == 0 else None}
        )
    raise r.error(f"unsupported dlib layer {tag!r}")


def read_dlib_dnn(path: str | Path) -> DlibDnn:
    """Parse a dlib dnn file of a sequential/residual network (no repeat layers) with metric loss.

    Layout: the loss layer's details, every wrapper's integer version from the outside in, the
    input layer, then each computational layer's details from the input side outwards, each
    followed by its wrapper's state (3 bools, 2-3 empty tensors; the innermost one also its
    sample expansion factor).
    """
    r = DlibReader.open(path)
    if r.int() != 1:
        raise r.error("not a dlib dnn file with a loss layer")
    loss = r.expect_str("loss_metric_2", "loss_metric_")
    loss_params = (r.float(), r.float()) if loss == "loss_metric_2" else ()
    versions = []
    while r.peek_str() is None:
        versions.append(r.int())
        if len(versions) > 10000:
            raise r.error("no input layer found")
    input_kind = r.expect_str("input_rgb_image_sized")
    mean = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    # add_layer wrappers are version 2 (3 = the innermost, over the input); tags/skips are 1.
    wrapped = [v for v in versions if v >= 2][::-1]
    layers = []
    for v in wrapped:
        layers.append(_read_layer(r))
        for _ in range(3):
            r.bool()
        for _ in range(3 if v >= 2 else 2):
            r.tensor()
        if v == 3:
            r.int()  # sample expansion factor
    if not r.at_end:
        raise r.error(f"{len(r.data) - r.pos} bytes left after {len(layers)} layers")
    return DlibDnn(loss, loss_params, input_kind, mean, size, layers)


def _fold(con: DnnLayer, aff: DnnLayer) -> nn.Conv2d:
    w, b = con.params["weight"], con.params["bias"]
    g, beta = aff.params["gamma"], aff.params["beta"]
    conv = nn.Conv2d(w.shape[1], w.shape[0], con.params["kernel"], con.params["stride"], con.params["padding"])
    conv.weight.data = torch.from_numpy(w * g[:, None, None, None])
    conv.bias.data = torch.from_numpy(b * g + beta)
    return conv


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: elementwise sum over the larger shape, missing entries zero (top-left aligned)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResBlock(nn.Module):
    """relu(skip(x) + affine(conv(relu(affine(conv(x)))))), skip = 2x2 average pool when downsampling."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, pool: DnnLayer | None) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.pool = (
            nn.AvgPool2d(pool.params["kernel"], pool.params["stride"], pool.params["padding"])
            if pool
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(add_prev(self.pool(x), y))


class DlibResNet(FaceEmbedder):
    """The module built from a parsed dlib metric network; see the module docstring."""

    dim = 128
    normalized = False
    same_person_threshold = DLIB_SAME_PERSON_THRESHOLD

    def __init__(self, net: DlibDnn) -> None:
        super().__init__()
        L = net.layers
        kinds = [layer.kind for layer in L]
        if kinds[:4] != ["con", "affine", "relu", "max_pool"] or kinds[-2:] != ["avg_pool", "fc"]:
            raise ValueError(f"not the dlib face ResNet layout: starts {kinds[:4]}, ends {kinds[-2:]}")
        self.stem = nn.Sequential(
            _fold(L[0], L[1]),
            nn.ReLU(),
            nn.MaxPool2d(L[3].params["kernel"], L[3].params["stride"], L[3].params["padding"]),
        )
        blocks, i = [], 4
        while i < len(L) - 2:
            k = kinds[i : i + 8]
            if k[:5] != ["con", "affine", "relu", "con", "affine"]:
                raise ValueError(f"unexpected layer sequence at layer {i}: {k}")
            down = k[5] == "avg_pool"
            end = i + (8 if down else 7)
            if kinds[end - 2 : end] != ["add_prev", "relu"]:
                raise ValueError(f"residual block at layer {i} does not end in add_prev, relu: {kinds[i:end]}")
            blocks.append(ResBlock(_fold(L[i], L[i + 1]), _fold(L[i + 3], L[i + 4]), L[i + 5] if down else None))
            i = end
        self.blocks = nn.Sequential(*blocks)
        pool = L[-2].params
        if pool["kernel"] != (0, 0):
            raise ValueError(f"expected a global average pool before fc, got {pool}")
        w = L[-1].params["weight"]
        self.fc = nn.Linear(w.shape[0], w.shape[1], bias=L[-1].params["bias"] is not None)
        self.fc.weight.data = torch.from_numpy(np.ascontiguousarray(w.T))
        if self.fc.bias is not None:
            self.fc.bias.data = torch.from_numpy(L[-1].params["bias"])
        if w.shape[1] != self.dim:
            raise ValueError(f"expected a {self.dim}-d embedding, the file has {w.shape[1]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


def build_dlib_resnet(weights: Path) -> DlibResNet:
    net = read_dlib_dnn(weights)
    if net.input_size != (150, 150) or not np.allclose(net.input_mean, DLIB_MEAN_RGB, atol=1e-3):
        raise ValueError(f"{weights}: input {net.input_size} mean {net.input_mean} differ from dlib's face ResNet")
    return DlibResNet(net)


DLIB_RESNET = register_model(
    ModelSpec(
        name="dlib_resnet",
        kind="embedder",
        build=build_dlib_resnet,
        weights=WeightSource(
            package="face_recognition_models",
            filename="models/dlib_face_recognition_resnet_model_v1.dat",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            license="CC0 (dlib model by Davis King; PyPI face-recognition-models 0.3.0)",
        ),
        preprocess=Preprocess(
            channel_order="RGB",
            mean=DLIB_MEAN_RGB,
            std=(256.0, 256.0, 256.0),
            chip=ChipSpec(method="dlib", size=150, padding=0.25),
        ),
        description="dlib's face recognition ResNet: 128-d, Euclidean same-person threshold 0.6; the offline default",
    )
)
