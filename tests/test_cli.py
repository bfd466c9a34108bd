"""The command line: bad flags and bad inputs are one clear line (exit 2), never a traceback.

The cases run ``cli.main`` in this process (a process start and torch's import cost ~1.5 s each);
the console script itself, a fresh process with nothing on stderr but the one line, is checked
once per kind of failure (parser, request check, model build)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

from facepipe import cli


def _facepipe(*args):
    return subprocess.run(
        [sys.executable, "-m", "facepipe.cli", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def _main(capsys, *args) -> tuple[int, str]:
    """``facepipe ARGS`` in this process, from the repo root: (exit status, stderr)."""
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        code = cli.main(list(args))
    except SystemExit as e:  # the parser's own exit
        code = e.code
    finally:
        os.chdir(cwd)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "x"], "the following arguments are required: --output"),
        (["run", "-o", "o"], "no inputs: name INPUT paths"),
        (["run", "x", "-o", "o", "--score-threshold", "2"], "is not between 0 and 1"),
        (["run", "x", "-o", "o", "--batch-size", "0"], "not a positive integer"),
        (["run", "x", "-o", "o", "--no-such-flag"], "unrecognized arguments"),
        (["run", "x", "-o", "o", "--config", "/no/such.toml"], "config file /no/such.toml: Failed to open"),
        (["run", "--like", "README.md"], "config file README.md: not valid JSON"),
        (["run", "/no/such/dir", "-o", "o"], "input /no/such/dir does not exist"),
        (["run", "README.md", "-o", "o", "--detector", "nope"], "unknown detector 'nope'; known: centerface"),
        (["run", "README.md", "-o", "o", "--dt", "yesterday"], "is not a date of the form YYYY-MM-DD"),
        (["run", "README.md", "-o", "o", "--run-id", "a/b"], "must be letters, digits"),
        (["run", "ftp://host/x", "-o", "o"], "unsupported URI scheme"),
        (
            ["run", "README.md", "-o", "o", "--embedder", "nope"],
            "unknown embedder 'nope'; known: arcface_r100, arcface_r50, dlib_resnet",
        ),
        (
            ["run", "README.md", "-o", "o", "--embedder", "arcface_r50"],
            "embedder 'arcface_r50' has no built-in weights",
        ),
        (
            ["run", "README.md", "-o", "o", "--embedder-weights", "/no/such.pth"],
            "embedder weights /no/such.pth not found",
        ),
        (
            ["run", "README.md", "-o", "o", "--align", "arcface"],
            "align method 'arcface' does not make the 'dlib' chips",
        ),
        (["run", "README.md", "-o", "o", "--align", "sideways"], "invalid choice: 'sideways'"),
        (["run", "README.md", "-o", "o", "--detector", "retinaface"], "detector 'retinaface' has no built-in weights"),
        (["run", "README.md", "-o", "o", "--detector-config", "r50"], "detector 'yunet' takes no config"),
        (
            ["run", "README.md", "-o", "o", "--detector-weights", "README.md"],
            "README.md: not a PyTorch checkpoint for YuNet",
        ),
        (
            ["run", "README.md", "-o", "o", "--detector", "centerface", "--detector-weights", "README.md"],
            "README.md is not an ONNX model",
        ),
        (
            [
                "run",
                "README.md",
                "-o",
                "o",
                "--detector",
                "retinaface",
                "--detector-weights",
                "README.md",
                "--detector-config",
                "x9",
            ],
            "RetinaFace config 'x9' is neither a preset",
        ),
        (["eval-detect", ".", "--boxes", "/no/such.xml"], "No such file or directory"),
        (["eval-detect", ".", "--boxes", "README.md", "--format", "wider"], "not WIDER FACE ground truth"),
    ],
)
def test_bad_request_is_one_line_exit_2(capsys, args, message):
    code, err = _main(capsys, *args)
    _one_line_exit_2(code, err, message)


def _one_line_exit_2(code: int, err: str, message: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "x", "-o", "o", "--no-such-flag"], "unrecognized arguments"),
        (["run", "README.md", "-o", "o", "--dt", "yesterday"], "is not a date of the form YYYY-MM-DD"),
        (["run", "README.md", "-o", "o", "--detector-weights", "README.md"], "not a PyTorch checkpoint for YuNet"),
    ],
)
def test_the_console_script_prints_only_the_one_line(args, message):
    r = _facepipe(*args)
    _one_line_exit_2(r.returncode, r.stderr, message)


def test_help_lists_the_run_flags(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--help"])
    assert e.value.code == 0
    r = capsys.readouterr()
    for flag in (
        "--detector",
        "--score-threshold",
        "--long-side",
        "--batch-size",
        "--dt",
        "--run-id",
        "--image-column",
        "--id-column",
        "--max-detect-actors",
        "--embedder",
        "--embedder-weights",
        "--align",
    ):
        assert flag in r.out
