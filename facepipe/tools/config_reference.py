"""docs/config.md, drawn from the config tree (``facepipe.config``): every setting with its path
in a config file, its default, its flag and what it does. ``python -m
facepipe.tools.config_reference > docs/config.md``; ``tests/tools/test_config_reference.py``
fails when the file and the tree differ."""

from __future__ import annotations

import dataclasses
import inspect

from facepipe.config import RunConfig
from facepipe.flags import Flag, section_type, sections


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    return first if not first.startswith(f"{cls.__name__}(") else ""


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "none" if f.default is None else f"`{f.default!r}`".replace("|", "\\|")
    return "(below)" if section_type(f) else "required"


#: the run's own arguments, given on the command line but not declared as flags of a config
BY_HAND = {
    "inputs": ("`INPUT...`", "image folders, Parquet files or folders, .tar shards; local or s3://"),
    "output": ("`--output`, `-o`", "the output root, local or s3://"),
}


def reference() -> str:
    out = [
        "# Settings",
        "",
        "Every setting of `facepipe run`, as a config file names it (`facepipe run --config FILE`: TOML,",
        'YAML or JSON, nested by section: `[detect]` then `name = "yunet"`) and, where it has one, its',
        "flag. Flags given on the command line override the file; `--like OUT/_runs/RUN_ID.json` starts",
        "from a past run's settings. Drawn from `facepipe/config.py` by",
        "`python -m facepipe.tools.config_reference` (a test keeps this file in step).",
    ]
    for path, cls, _ in sections(RunConfig):
        name = path.rstrip(".") or "(top level)"
        out += ["", f"## `{name}`" if path else "## top level", ""]
        if _summary(cls):
            out += [_summary(cls), ""]
        out += ["| setting | default | flag | what it does |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            if section_type(f):
                continue
            spec: Flag | None = f.metadata.get("flag")
            flag = f"`{spec.name}`" if spec else "(file only)"
            what = spec.help.replace("|", "\\|") if spec else ""
            if not path and f.name in BY_HAND:
                flag, what = BY_HAND[f.name]
            out.append(f"| `{path}{f.name}` | {_default(f)} | {flag} | {what} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
