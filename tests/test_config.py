"""One config tree (facepipe.config): the command line, config files and past runs' manifests all
build it, each default is declared once, and the CLI walks the tree instead of listing classes."""

import dataclasses
import importlib
import inspect
import json
import pkgutil

import pytest

import facepipe
from facepipe.cli import build_parser
from facepipe.commands import run_config_from_args
from facepipe.config import RunConfig, from_dict, leaf_defaults, to_dict
from facepipe.errors import UserError
from facepipe.flags import flag_fields, sections


def _run_config(*flags: str) -> RunConfig:
    return run_config_from_args(build_parser().parse_args(["run", *flags]))


def _get(cfg, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_no_flags_give_the_dataclass_defaults():
    assert _run_config("in", "-o", "out") == RunConfig(inputs=("in",), output="out")


@pytest.mark.parametrize(
    "flags, path, value",
    [
        (["--detector", "retinaface"], "detect.name", "retinaface"),
        (["--score-threshold", "0.7"], "detect.score_threshold", 0.7),
        (["--device", "cpu"], "compute.device", "cpu"),  # one --device for every model
        (["--min-face", "40"], "decode.min_face", 40),
        (["--align", "dlib_landmarks"], "embed.align.method", "dlib_landmarks"),
        (["--knn", "ivf"], "cluster.index.backend", "ivf"),
        (["--no-cluster"], "cluster.enabled", False),
        (["--no-score"], "score.enabled", False),
        (["--full"], "cluster.full", True),
        (["--full"], "full", True),
        (["--detect-actors", "2"], "compute.detect_actors_min", 2),
        (["--id-column", "key"], "read.id_column", "key"),
        (["--dt", "2026-01-02"], "dt", "2026-01-02"),
    ],
)
def test_each_flag_fills_its_field(flags, path, value):
    assert _get(_run_config("in", "-o", "out", *flags), path) == value


def test_the_cli_has_a_flag_for_every_flag_field_of_the_tree_and_no_flag_twice():
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    flat = [n for a in run._actions for n in a.option_strings]
    assert len(flat) == len(set(flat))
    declared = [f.metadata["flag"].name for _, cls, _ in sections(RunConfig) for f in flag_fields(cls)]
    assert len(declared) == len(set(declared)) and set(declared) <= set(flat)
    dests = {a.dest for a in run._actions}
    assert {p + f.name for p, cls, _ in sections(RunConfig) for f in flag_fields(cls)} <= dests


def test_the_parser_holds_no_default_of_its_own():
    """An omitted flag leaves no value: the field's default (or a config file's) applies."""
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    tree = {p + f.name for p, cls, _ in sections(RunConfig) for f in flag_fields(cls)}
    assert all(a.default == "==SUPPRESS==" for a in run._actions if a.dest in tree)


def test_a_config_file_is_the_base_and_flags_given_override_it(tmp_path):
    toml = tmp_path / "night.toml"
    toml.write_text(
        'inputs = ["s3://b/photos"]\noutput = "s3://b/faces"\n'
        '[detect]\nname = "retinaface"\nscore_threshold = 0.6\n'
        '[embed.align]\nmethod = "dlib_landmarks"\n[compute]\nrows_per_file = 100\n'
    )
    cfg = _run_config("--config", str(toml), "--score-threshold", "0.7")
    assert cfg.inputs == ("s3://b/photos",) and cfg.output == "s3://b/faces"
    assert cfg.detect.name == "retinaface" and cfg.detect.score_threshold == 0.7  # the flag wins
    assert cfg.embed.align.method == "dlib_landmarks" and cfg.compute.rows_per_file == 100
    yaml = tmp_path / "night.yaml"
    yaml.write_text("output: o\ndetect:\n  name: centerface\n")
    assert _run_config("in", "--config", str(yaml)).detect.name == "centerface"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[detect]\nnmae = 1\n", "detect.nmae: not a setting; known here: batch_size, config"),
        ("[detect]\nscore_threshold = 2.0\n", "detect.score_threshold: 2.0 is not between 0 and 1"),
        ('[compute]\nexecutor = "slurm"\n', "compute.executor: 'slurm' is not one of auto, ray, local"),
        ("[detect\n", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_one_clear_user_error(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(UserError, match=message):
        _run_config("in", "-o", "out", "--config", str(f))


def test_a_past_runs_manifest_gives_back_its_config_with_a_fresh_run_id(tmp_path):
    """``--like OUT/_runs/RUN_ID.json`` reruns a past night exactly: the manifest's config,
    as the job records it (to_dict), reads back to the same tree."""
    past = dataclasses.replace(
        _run_config("a", "b", "-o", "out", "--detector", "retinaface", "--cluster-threshold", "0.4", "--kms", "local",
                    "--key-file", "/k.json", "--dt", "2026-01-02", "--run-id", "r1"),
    )  # fmt: skip
    manifest = tmp_path / "r1.json"
    manifest.write_text(json.dumps({"run_id": "r1", "counts": {}, "config": to_dict(past)}))
    again = _run_config("--like", str(manifest))
    assert again == dataclasses.replace(past, run_id="")
    assert _run_config("--like", str(manifest), "--no-score").score.enabled is False


def test_every_field_round_trips_through_plain_data():
    cfg = RunConfig(inputs=("x",), output="o")
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


#: parameters that share a config field's name but are not that setting (why, each)
NOT_THE_SETTING = {
    "device": "a function's device is where it runs when called on its own (the CPU); a run passes its own",
    "k": "conv_bn's kernel size",
    "name": "a reader's name for its bytes in messages",
    "config": "decode_image's DecodeConfig default is the config itself",
    "score_threshold": "detect_for_eval's floor for the AP curve (all detections above 0.02), not the kept faces'",
}


def _functions():
    for m in pkgutil.walk_packages(facepipe.__path__, "facepipe."):
        if m.name.endswith(("__main__", "jobs.nightly", "jobs.extract")):
            continue
        mod = importlib.import_module(m.name)
        for obj in vars(mod).values():
            if inspect.isclass(obj) and obj.__module__ == mod.__name__ and not dataclasses.is_dataclass(obj):
                yield from (v for v in vars(obj).values() if inspect.isfunction(v))
            elif inspect.isfunction(obj) and obj.__module__ == mod.__name__:
                yield obj


def test_no_function_gives_a_setting_a_default_other_than_the_configs():
    """A default is defined once, on its field: a function parameter named like a setting whose
    default is one value across the tree restates it at most, never with another value (DROCC's
    max_train was 100,000 in one place and 20,000 in another; the clustering methods' threshold 0.5
    where the config says 0.45)."""
    values: dict[str, set] = {}
    for path, default in leaf_defaults(RunConfig):
        values.setdefault(path.split(".")[-1], set()).add(repr(default))
    drift = []
    for fn in _functions():
        for p in inspect.signature(fn).parameters.values():
            known = values.get(p.name)
            if known and len(known) == 1 and p.default not in (inspect.Parameter.empty, None):
                if repr(p.default) not in known and p.name not in NOT_THE_SETTING:
                    drift.append(f"{fn.__module__}.{fn.__qualname__}({p.name}={p.default!r}), config: {known}")
    assert not drift, "\n".join(drift)


def test_nested_settings_live_in_one_section_each():
    paths = [p for p, _, _ in sections(RunConfig)]
    assert len(paths) == len(set(paths)) and {"detect.", "embed.align.", "cluster.index.", "encryption."} <= set(paths)
