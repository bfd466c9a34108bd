"""The backbones of the RetinaFace family, with the key names of the widely used checkpoints:
MobileNetV1-0.25 (``stage1..3``) and a torchvision-style ResNet-50 (``layer1..4``), each returning
the stride 8 / 16 / 32 feature maps the FPN takes; plus the conv + BN (+ activation) blocks the
detector's FPN and SSH modules share (``facepipe.stages.detect.retinaface``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _act(slope: float) -> nn.Module:
    return nn.LeakyReLU(slope, inplace=True) if slope else nn.ReLU(inplace=True)


def conv_bn(cin: int, cout: int, stride: int = 1, slope: float | None = 0.0, k: int = 3) -> nn.Sequential:
    """Conv (no bias) + BN (+ activation unless ``slope`` is None): keys ``.0``, ``.1``."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if slope is not None:
        layers.append(_act(slope))
    return nn.Sequential(*layers)


def conv_dw(cin: int, cout: int, stride: int, slope: float) -> nn.Sequential:
    """Depthwise 3x3 + BN + act, pointwise 1x1 + BN + act: keys ``.0``, ``.1``, ``.3``, ``.4``."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        _act(slope),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        _act(slope),
    )


class MobileNetV1(nn.Module):
    """MobileNet-0.25 as in the reference: returns stage1 (stride 8), stage2 (16), stage3 (32)."""

    def __init__(self, slope: float) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, slope),
            conv_dw(8, 16, 1, slope),
            conv_dw(16, 32, 2, slope),
            conv_dw(32, 32, 1, slope),
            conv_dw(32, 64, 2, slope),
            conv_dw(64, 64, 1, slope),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2, slope), *(conv_dw(128, 128, 1, slope) for _ in range(5)))
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2, slope), conv_dw(256, 256, 1, slope))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 bottleneck (stride on the 3x3), same key names."""

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet50(nn.Module):
    """ResNet-50 trunk returning layer2 (stride 8), layer3 (16), layer4 (32); no avgpool/fc keys."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (width, n, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            blocks = [Bottleneck(cin, width, stride)] + [Bottleneck(width * 4, width) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = width * 4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]
