"""Every registered model: a known kind, a declared preprocessing, and built-in weights that load
(checked against their sha256) or a clear demand for a weights file."""

import pytest

from facepipe.registry import MODEL_KINDS, create_model, get_model_spec, list_models, resolve_weights


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_or_asks_for_weights(name):
    spec = get_model_spec(name)
    assert spec.kind in MODEL_KINDS and spec.description
    if spec.kind == "embedder":
        assert spec.preprocess.chip is not None, "embedders declare the chip they take"
    if spec.weights is None:
        with pytest.raises(FileNotFoundError, match="no built-in weights"):
            resolve_weights(name)
        return
    assert len(spec.weights.sha256) == 64 and spec.weights.license
    model = create_model(name, kind=spec.kind)
    assert model.model_id == f"{name}@{spec.weights.sha256[:12]}"
    assert model.preprocess is spec.preprocess


def test_unknown_names_list_the_known_ones():
    with pytest.raises(KeyError, match="unknown embedder 'x'; known: arcface_r100, arcface_r50, dlib_resnet"):
        get_model_spec("x", kind="embedder")
    with pytest.raises(KeyError, match="unknown detector 'dlib_resnet'"):
        get_model_spec("dlib_resnet", kind="detector")  # right name, wrong kind


@pytest.mark.parametrize("name", ["centerface"])
def test_converted_weights_are_cached_by_hash_and_used_instead_of_converting(name, tmp_path, monkeypatch):
    """A detector whose weights need converting (an ONNX graph) converts
    them once per weights file: the next build -- another actor, another run on the same
    cluster -- loads the cached state dict and never converts; a damaged cache entry is redone."""
    import dataclasses

    import torch

    from facepipe import registry

    monkeypatch.setenv("FACEPIPE_CACHE", str(tmp_path))
    spec = get_model_spec(name)
    first = create_model(name, kind="detector")
    (cached,) = (tmp_path / "models").glob(f"{name}-{spec.weights.sha256[:12]}.pt")

    def no_conversion(path):
        raise AssertionError("converted again")

    monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(spec, build=no_conversion))
    again = create_model(name, kind="detector")
    assert again.model_id == first.model_id
    for k, v in first.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    cached.write_bytes(b"not a state dict")
    monkeypatch.setitem(registry._REGISTRY, name, spec)
    create_model(name, kind="detector")
    assert len(torch.load(cached, weights_only=True)) == len(first.state_dict())
