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
