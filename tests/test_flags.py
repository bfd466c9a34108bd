"""Each config declares its command-line flags once (facepipe.flags): with no flags given, the CLI
builds exactly the dataclasses' defaults, every flag reaches its field, and no flag name is
declared twice."""

import dataclasses

import pytest

from facepipe.cli import build_parser
from facepipe.commands import run_config_from_args
from facepipe.flags import flag_fields
from facepipe.pipeline import RunConfig


def _run_config(*flags: str) -> RunConfig:
    return run_config_from_args(build_parser().parse_args(["run", "in", "-o", "out", *flags]))


def test_no_flags_give_the_dataclass_defaults():
    assert _run_config() == RunConfig(inputs=("in",), output="out")


@pytest.mark.parametrize(
    "flags, path, value",
    [
        (["--detector", "retinaface"], "detect.name", "retinaface"),
        (["--score-threshold", "0.7"], "detect.score_threshold", 0.7),
        (["--device", "cpu"], "embed.device", "cpu"),  # one --device for both models
        (["--min-face", "40"], "decode.min_face", 40),
        (["--align", "dlib_landmarks"], "embed.align.method", "dlib_landmarks"),
        (["--knn", "ivf"], "cluster.index.backend", "ivf"),
        (["--no-cluster"], "cluster.enabled", False),
        (["--no-score"], "score.enabled", False),
        (["--full"], "cluster.full", True),
        (["--detect-actors", "2"], "compute.detect_actors_min", 2),
        (["--id-column", "key"], "read.id_column", "key"),
    ],
)
def test_each_flag_fills_its_field(flags, path, value):
    got = _run_config(*flags)
    for part in path.split("."):
        got = getattr(got, part)
    assert got == value


def test_every_flag_is_declared_once():
    names = [f.option_strings for a in build_parser()._subparsers._group_actions for f in a.choices["run"]._actions]
    flat = [n for opts in names for n in opts]
    assert len(flat) == len(set(flat))
    declared = [f.metadata["flag"].name for cls in _configs() for f in flag_fields(cls)]
    assert len(declared) == len(set(declared)) and all(n in flat for n in declared)


def test_flag_defaults_are_the_field_defaults():
    """Nothing repeats a default: the parser's default is the field's own."""
    parser = build_parser()
    run = next(a for a in parser._subparsers._group_actions).choices["run"]
    for action in run._actions:
        if "." in action.dest:
            cls_name, field = action.dest.split(".")
            cls = next(c for c in _configs() if c.__name__ == cls_name)
            assert action.default == next(f.default for f in dataclasses.fields(cls) if f.name == field), action.dest


def _configs():
    from facepipe.align.stage import AlignConfig
    from facepipe.cluster.graph import IndexConfig
    from facepipe.cluster.stage import ClusterConfig
    from facepipe.decode import DecodeConfig
    from facepipe.detect.stage import DetectConfig
    from facepipe.embed.stage import EmbedConfig
    from facepipe.io.crypto import EncryptionConfig
    from facepipe.io.sources import ReadConfig
    from facepipe.pipeline import ComputeConfig
    from facepipe.score.stage import ScoreConfig

    return (
        AlignConfig,
        IndexConfig,
        ClusterConfig,
        DecodeConfig,
        DetectConfig,
        EmbedConfig,
        EncryptionConfig,
        ReadConfig,
        ComputeConfig,
        ScoreConfig,
    )
