"""ArcFace IResNet: insightface arcface_torch's architecture, key names and shapes, and loading.

No ArcFace weights exist offline here, so only the architecture, the checkpoint layout and the
alignment template are checked -- never accuracy. Checkpoints below are random weights saved in
arcface_torch's layout (a real backbone.pth loads the same way).
"""

import numpy as np
import pytest
import torch

from facepipe.registry import create_model, resolve_weights
from facepipe.stages.embed.iresnet import IResNet

# (key, shape) spot checks of arcface_torch's iresnet50 backbone.pth
R50_KEYS = {
    "conv1.weight": (64, 3, 3, 3),
    "bn1.running_var": (64,),
    "prelu.weight": (64,),
    "layer1.0.bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.0.prelu.weight": (64,),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.bn3.bias": (64,),
    "layer1.0.downsample.0.weight": (64, 64, 1, 1),
    "layer1.0.downsample.1.running_mean": (64,),
    "layer2.3.conv2.weight": (128, 128, 3, 3),
    "layer3.13.bn3.weight": (256,),
    "layer4.2.conv1.weight": (512, 512, 3, 3),
    "bn2.weight": (512,),
    "fc.weight": (512, 25088),
    "fc.bias": (512,),
    "features.weight": (512,),
    "features.running_var": (512,),
}


def _random_checkpoint(path, layers=(3, 4, 14, 3), prefix=""):
    torch.manual_seed(0)
    m = IResNet(layers)
    for mod in m.modules():  # non-trivial BN statistics, so eval mode is exercised
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    torch.save({prefix + k: v for k, v in m.state_dict().items()}, path)
    return m


def test_iresnet50_and_100_have_arcface_torchs_layout():
    sd50 = IResNet((3, 4, 14, 3)).state_dict()
    for k, shape in R50_KEYS.items():
        assert tuple(sd50[k].shape) == shape, k
    assert not any(k.startswith("layer5") for k in sd50) and "layer3.14.conv1.weight" not in sd50
    sd100 = IResNet((3, 13, 30, 3)).state_dict()
    assert (
        "layer3.29.conv1.weight" in sd100 and "layer2.12.bn3.weight" in sd100 and "layer3.30.conv1.weight" not in sd100
    )
    n50 = sum(
        v.numel() for k, v in sd50.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert 43_000_000 < n50 < 44_000_000  # arcface_torch's r50: 43.6M parameters


def test_loads_a_dataparallel_checkpoint_and_embeds_unit_vectors(tmp_path):
    ref = _random_checkpoint(tmp_path / "backbone.pth", prefix="module.").eval()
    m = create_model("arcface_r50", weights=tmp_path / "backbone.pth", kind="embedder")
    assert m.model_id.startswith("arcface_r50@") and m.chip.size == 112 and m.chip.method == "arcface"
    chips = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    e = m.embed(chips)
    assert e.shape == (3, 512) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    with torch.inference_mode():  # [-1, 1] input normalisation: (pixel - 127.5) / 127.5
        x = torch.from_numpy(chips).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        y = torch.nn.functional.normalize(ref(x), dim=1).numpy()
    assert np.abs(e - y).max() < 1e-4


def test_wrong_checkpoint_names_missing_and_unexpected_keys(tmp_path):
    _random_checkpoint(tmp_path / "r50.pth")
    with pytest.raises(ValueError, match=r"r50.pth does not fit IResNet-100: missing keys: layer2\.10\."):
        create_model("arcface_r100", weights=tmp_path / "r50.pth", kind="embedder")
    state = torch.load(tmp_path / "r50.pth", weights_only=True)
    state["head.weight"] = torch.zeros(3)
    state["fc.weight"] = torch.zeros(512, 100)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(
        ValueError, match=r"unexpected keys: head\.weight; wrong shapes: fc\.weight \(512, 100\) != \(512, 25088\)"
    ):
        create_model("arcface_r50", weights=tmp_path / "odd.pth", kind="embedder")


def test_arcface_needs_weights():
    with pytest.raises(FileNotFoundError, match="no built-in weights"):
        resolve_weights("arcface_r50", None, kind="embedder")


def test_weights_load_from_s3(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEPIPE_CACHE", str(tmp_path / "cache"))
    _random_checkpoint(tmp_path / "backbone.pth")
    s3_server.create_bucket(Bucket="models")
    s3_server.upload_file(str(tmp_path / "backbone.pth"), "models", "arcface/r50/backbone.pth")
    path, model_id = resolve_weights("arcface_r50", "s3://models/arcface/r50/backbone.pth", kind="embedder")
    _, local_id = resolve_weights("arcface_r50", tmp_path / "backbone.pth", kind="embedder")
    assert model_id == local_id and path.is_file() and str(path).startswith(str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_weights("arcface_r50", "s3://models/arcface/missing.pth", kind="embedder")
