"""RetinaFace (Deng et al., 2019) with MobileNet-0.25 or ResNet-50 backbones, for users' checkpoints.

Architecture and state-dict key names are those of the widely used PyTorch implementation
(biubug6/Pytorch_Retinaface and its derivatives such as Face-Detector-1MB-with-landmark):
``body.*`` (backbone: MobileNetV1 ``stage1..3``, or a torchvision-style ResNet-50 returning
``layer2..4``), ``fpn.output1..3`` / ``fpn.merge1..2``, ``ssh1..3`` context modules, and per FPN
level ``ClassHead.i`` (2 logits per anchor), ``BboxHead.i`` (4 deltas), ``LandmarkHead.i``
(10 deltas). A ``module.`` prefix (DataParallel) is dropped.

Real checkpoints differ in what the weights cannot say, so a :class:`RetinaFaceConfig` does:
anchor sizes per level, steps, variance, backbone activation (ReLU or LeakyReLU slope), the
FPN/SSH activation and the input normalisation. Presets: ``mnet025`` (Pytorch_Retinaface's
``mobilenet0.25_Final.pth``: LeakyReLU 0.1), ``mnet025_relu`` (its first release: plain ReLU),
``mnet025_1mb`` (Face-Detector-1MB-with-landmark: ReLU, anchors 10-256), ``r50``
(``Resnet50_Final.pth``); or a JSON file with the fields of :class:`RetinaFaceConfig`.

Input: BGR minus (104, 117, 123), any H and W (padded to multiples of 32). Decoding follows the
reference: centre offsets scaled by variance[0] and the anchor size, log sizes by variance[1];
landmarks like centres.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from facepipe.registry import ModelSpec, Preprocess, load_state_dict_strict, register_model
from facepipe.stages.detect.backbones import MobileNetV1, ResNet50, conv_bn
from facepipe.stages.detect.base import Candidates, FaceDetector


@dataclass(frozen=True)
class RetinaFaceConfig:
    """What a RetinaFace checkpoint does not record about itself.

    backbone: ``mobilenet0.25`` or ``resnet50``. min_sizes: anchor sides (input pixels) per FPN
    level, two per location. steps: the levels' strides. variance: box-delta scales (centre, size).
    leaky: negative slope of the backbone's activations (0 = ReLU). neck_leaky: slope in FPN and
    SSH (None = the reference's rule: 0.1 when out_channel <= 64, else 0).
    in_channel / out_channel: channels of the first returned backbone level / of the FPN.
    """

    backbone: str = "mobilenet0.25"
    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variance: tuple[float, float] = (0.1, 0.2)
    leaky: float = 0.1
    neck_leaky: float | None = None
    in_channel: int = 32
    out_channel: int = 64

    @property
    def neck_slope(self) -> float:
        if self.neck_leaky is not None:
            return self.neck_leaky
        return 0.1 if self.out_channel <= 64 else 0.0

    @staticmethod
    def load(name_or_file: str | None) -> tuple[str, "RetinaFaceConfig"]:
        """(label, config) of a preset name or a JSON file (label = file stem)."""
        name = name_or_file or "mnet025"
        if name in PRESETS:
            return name, PRESETS[name]
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"RetinaFace config {name!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
        try:
            raw = json.loads(path.read_text())
            known = {f.name for f in dataclasses.fields(RetinaFaceConfig)}
            unknown = sorted(set(raw) - known)
            if unknown:
                raise ValueError(f"unknown fields {unknown}; known: {sorted(known)}")
            if "min_sizes" in raw:
                raw["min_sizes"] = tuple(tuple(int(v) for v in level) for level in raw["min_sizes"])
            for k in ("steps", "variance"):
                if k in raw:
                    raw[k] = tuple(raw[k])
            cfg = RetinaFaceConfig(**raw)
        except (ValueError, TypeError) as e:
            raise ValueError(f"RetinaFace config {path}: {e}") from None
        if cfg.backbone not in ("mobilenet0.25", "resnet50") or len(cfg.min_sizes) != 3 or len(cfg.steps) != 3:
            raise ValueError(
                f"RetinaFace config {path}: backbone must be mobilenet0.25 or resnet50, with 3 levels of "
                "min_sizes and steps"
            )
        return path.stem, cfg


PRESETS: dict[str, RetinaFaceConfig] = {
    "mnet025": RetinaFaceConfig(),
    "mnet025_relu": RetinaFaceConfig(leaky=0.0, neck_leaky=0.0),
    "mnet025_1mb": RetinaFaceConfig(min_sizes=((10, 20), (32, 64), (128, 256)), leaky=0.0, neck_leaky=0.0),
    "r50": RetinaFaceConfig(backbone="resnet50", leaky=0.0, in_channel=256, out_channel=256),
}


class FPN(nn.Module):
    def __init__(self, cins: list[int], cout: int, slope: float) -> None:
        super().__init__()
        self.output1 = conv_bn(cins[0], cout, 1, slope, k=1)
        self.output2 = conv_bn(cins[1], cout, 1, slope, k=1)
        self.output3 = conv_bn(cins[2], cout, 1, slope, k=1)
        self.merge1 = conv_bn(cout, cout, 1, slope)
        self.merge2 = conv_bn(cout, cout, 1, slope)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return [o1, o2, o3]


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches."""

    def __init__(self, cin: int, cout: int, slope: float) -> None:
        super().__init__()
        self.conv3X3 = conv_bn(cin, cout // 2, 1, None)
        self.conv5X5_1 = conv_bn(cin, cout // 4, 1, slope)
        self.conv5X5_2 = conv_bn(cout // 4, cout // 4, 1, None)
        self.conv7X7_2 = conv_bn(cout // 4, cout // 4, 1, slope)
        self.conv7x7_3 = conv_bn(cout // 4, cout // 4, 1, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        c7_2 = self.conv7X7_2(c5_1)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(c7_2)], dim=1))


class _Head(nn.Module):
    def __init__(self, cin: int, anchors: int, per_anchor: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(cin, anchors * per_anchor, 1)
        self.per_anchor = per_anchor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.per_anchor)


class RetinaFace(FaceDetector):
    def __init__(self, cfg: RetinaFaceConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.backbone == "mobilenet0.25":
            self.body: nn.Module = MobileNetV1(cfg.leaky)
        elif cfg.backbone == "resnet50":
            self.body = ResNet50()
        else:
            raise ValueError(f"unknown RetinaFace backbone {cfg.backbone!r}")
        c = cfg.in_channel
        self.fpn = FPN([c * 2, c * 4, c * 8], cfg.out_channel, cfg.neck_slope)
        self.ssh1, self.ssh2, self.ssh3 = (SSH(cfg.out_channel, cfg.out_channel, cfg.neck_slope) for _ in range(3))
        na = len(cfg.min_sizes[0])
        self.ClassHead = nn.ModuleList(_Head(cfg.out_channel, na, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(cfg.out_channel, na, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(cfg.out_channel, na, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """x (B, 3, H, W) normalised BGR -> (box deltas (B, A, 4), face probability (B, A),
        landmark deltas (B, A, 10), (H, W)); A = anchors over the three levels."""
        f = self.fpn(self.body(x))
        f = [self.ssh1(f[0]), self.ssh2(f[1]), self.ssh3(f[2])]
        loc = torch.cat([h(t) for h, t in zip(self.BboxHead, f)], dim=1)
        cls = torch.cat([h(t) for h, t in zip(self.ClassHead, f)], dim=1)
        ldm = torch.cat([h(t) for h, t in zip(self.LandmarkHead, f)], dim=1)
        return loc, F.softmax(cls, dim=-1)[..., 1], ldm, (x.shape[2], x.shape[3])

    def priors(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(A, 4) anchors (cx, cy, s_x, s_y) in input pixels, in the heads' output order
        (level, row, column, size); cached per input size."""
        key = (h, w, str(device))
        cache = self.__dict__.setdefault("_priors", {})
        if key not in cache:
            out = []
            for sizes, step in zip(self.cfg.min_sizes, self.cfg.steps):
                fh, fw = -(-h // step), -(-w // step)
                for i, j in product(range(fh), range(fw)):
                    for s in sizes:
                        out.append(((j + 0.5) * step, (i + 0.5) * step, s, s))
            cache[key] = torch.tensor(out, dtype=torch.float32, device=device)
        return cache[key]

    def decode(self, raw: tuple, score_threshold: float) -> Candidates:
        loc, prob, ldm, (h, w) = raw
        pri = self.priors(h, w, loc.device)
        if pri.shape[0] != loc.shape[1]:
            raise ValueError(
                f"{pri.shape[0]} anchors for {loc.shape[1]} predictions: anchors/steps do not fit this checkpoint"
            )
        b, a = torch.nonzero(prob > score_threshold, as_tuple=True)
        p, d, lm = pri[a], loc[b, a], ldm[b, a].view(-1, 5, 2)
        v0, v1 = self.cfg.variance
        centre = p[:, :2] + d[:, :2] * v0 * p[:, 2:]
        size = p[:, 2:] * torch.exp(d[:, 2:] * v1)
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
        landmarks = p[:, None, :2] + lm * v0 * p[:, None, 2:]
        return Candidates(boxes, prob[b, a], landmarks, b)


def build_retinaface(weights: Path, config: str | None = None) -> RetinaFace:
    _, cfg = RetinaFaceConfig.load(config)
    model = RetinaFace(cfg)
    load_state_dict_strict(model, weights, f"RetinaFace {cfg.backbone}")
    return model


RETINAFACE = register_model(
    ModelSpec(
        name="retinaface",
        kind="detector",
        build=build_retinaface,
        weights=None,
        preprocess=Preprocess(channel_order="BGR", mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), pad_multiple=32),
        description="RetinaFace (MobileNet-0.25 / ResNet-50, FPN, SSH), reference PyTorch layout; "
        "bring your own checkpoint",
        configs=tuple(PRESETS),
    )
)
