"""ArcFace embedders: insightface's ``arcface_torch`` IResNet-50 / IResNet-100, for users who bring
their own ``backbone.pth``.

State-dict layout and key names are those of ``arcface_torch/backbones/iresnet.py``: ``conv1``,
``bn1``, ``prelu``, ``layer1..4`` (blocks of ``bn1, conv1, bn2, prelu, conv2, bn3`` and a
``downsample`` of 1x1 conv + BN on each stage's first block), ``bn2``, ``dropout``, ``fc``
(512*7*7 -> 512) and ``features`` (BatchNorm1d). Input: a 112x112 RGB chip aligned to the ArcFace
5-point template, normalised to [-1, 1] ((pixel - 127.5) / 127.5). Output: 512-d, L2-normalised.

No ArcFace weights are available offline here: tests check the architecture, key names and shapes,
loading (``module.`` prefix, local path or ``s3://``) and the alignment template -- not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facepipe.registry import ModelSpec, Preprocess, load_state_dict_strict, register_model
from facepipe.stages.embed.base import ChipSpec, FaceEmbedder

#: ArcFace models score pairs by cosine similarity; 0.3 is a common same-person cut for
#: arcface_torch's MS1MV3/Glint360K models. As an L2 distance of unit vectors: sqrt(2 - 2 * 0.3).
ARCFACE_SAME_PERSON_THRESHOLD = (2 - 2 * 0.3) ** 0.5


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (self.downsample(x) if self.downsample is not None else x)


class IResNet(FaceEmbedder):
    dim = 512
    normalized = True
    same_person_threshold = ARCFACE_SAME_PERSON_THRESHOLD

    def __init__(self, layers: tuple[int, int, int, int], num_features: int = 512) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), 1):
            down = nn.Sequential(nn.Conv2d(cin, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-5))
            blocks = [IBasicBlock(cin, planes, 2, down)] + [IBasicBlock(planes, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        self.dim = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _builder(layers: tuple[int, int, int, int], depth: str):
    def build(weights: Path) -> IResNet:
        model = IResNet(layers)
        load_state_dict_strict(model, weights, f"IResNet-{depth}")
        return model

    return build


_ARCFACE_PRE = Preprocess(
    channel_order="RGB",
    mean=(127.5, 127.5, 127.5),
    std=(127.5, 127.5, 127.5),
    chip=ChipSpec(method="arcface", size=112),
)

for _depth, _layers in (("50", (3, 4, 14, 3)), ("100", (3, 13, 30, 3))):
    register_model(
        ModelSpec(
            name=f"arcface_r{_depth}",
            kind="embedder",
            build=_builder(_layers, _depth),
            weights=None,
            preprocess=_ARCFACE_PRE,
            description=f"insightface arcface_torch IResNet-{_depth}, 512-d, L2-normalised; "
            "bring your own backbone.pth",
        )
    )
