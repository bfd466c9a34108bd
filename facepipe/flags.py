"""Command-line flags declared on the config dataclasses they fill, and the walk over a config tree.

A config field users set from the command line is declared with :func:`flag`: its default, its
flag name and its help sit beside the field, once. A field holding another config is a *section*
(:func:`sections` finds them: a dataclass default, or :func:`section` for an optional one).
:func:`add_flags` puts a config's flags on an argparse parser or group, each under the dotted path
of its field (``detect.name``) and with no default of its own: the namespace holds only the flags
given, and :func:`given` returns them as a nested dict, ready to lay over a config file's
(``facepipe.config``). :func:`from_args` builds the config from the flags given and the fields'
defaults. The CLI never repeats a default or a field name.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable


def positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{s} is not a positive integer")
    return v


def non_negative_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{s} must be >= 0")
    return v


def positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{s} is not a positive number")
    return v


def unit_float(s: str) -> float:
    v = float(s)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{s} is not between 0 and 1")
    return v


@dataclass(frozen=True)
class Flag:
    name: str  # e.g. "--detector"
    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple | None = None
    metavar: str | None = None
    #: "store_true" (a switch that turns a False default on) or "store_false" (``--no-x`` turning
    #: a True default off); None: takes a value
    action: str | None = None


def flag(default: Any, name: str, help: str, **kw: Any) -> Any:
    """A dataclass field set by the command-line flag ``name`` (``kw``: see :class:`Flag`)."""
    return dataclasses.field(default=default, metadata={"flag": Flag(name, help, **kw)})


def section(cls: type, title: str = "") -> Any:
    """A field holding an optional config ``cls`` (default None), e.g. encryption: a section of
    the tree all the same. ``title`` names its group of flags."""
    return dataclasses.field(default=None, metadata={"section": cls, "title": title})


def titled(cls: type, title: str) -> Any:
    """A field holding the config ``cls`` (its defaults), its flags grouped under ``title``."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls, "title": title})


def section_type(f: dataclasses.Field) -> type | None:
    """The config class a field holds, or None for a plain value."""
    if "section" in f.metadata:
        return f.metadata["section"]
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    else:
        default = f.default
    return type(default) if dataclasses.is_dataclass(default) else None


def sections(cls: type, prefix: str = "") -> list[tuple[str, type, str]]:
    """``(path, config class, title)`` of ``cls`` itself (path ``prefix``) and of every section
    below it, depth first: the config tree."""
    out = [(prefix, cls, "")]
    for f in dataclasses.fields(cls):
        sub = section_type(f)
        if sub is not None:
            below = sections(sub, f"{prefix}{f.name}.")
            out += [(below[0][0], sub, f.metadata.get("title", "")), *below[1:]]
    return out


def flag_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "flag" in f.metadata]


def add_flags(
    parser: Any, cls: type, prefix: str = "", skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None
) -> None:
    """Add the flags ``cls`` declares (those in ``only`` when given, but never those in ``skip``)
    to ``parser`` (or a group), each under its dotted path (``prefix`` + field name)."""
    for f in flag_fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        spec: Flag = f.metadata["flag"]
        kw: dict[str, Any] = {"dest": prefix + f.name, "default": argparse.SUPPRESS}
        if spec.action:
            kw["action"] = spec.action
            help = spec.help
        else:
            metavar = spec.metavar or (None if spec.choices else spec.name.lstrip("-").upper().replace("-", "_"))
            kw.update(type=spec.type, choices=spec.choices, metavar=metavar)
            kw = {k: v for k, v in kw.items() if v is not None}
            help = f"{spec.help} (default: {f.default})" if f.default not in (None, "") else spec.help
        parser.add_argument(spec.name, help=help, **kw)


def given(args: argparse.Namespace, root: type) -> dict:
    """The flags of ``root``'s tree given on the command line, as a nested dict
    (``{"detect": {"name": "retinaface"}}``), ready to lay over a config file's values."""
    out: dict = {}
    for path, cls, _ in sections(root):
        for f in flag_fields(cls):
            if hasattr(args, path + f.name):
                node = out
                for part in path.split(".")[:-1]:
                    node = node.setdefault(part, {})
                node[f.name] = getattr(args, path + f.name)
    return out


def from_args(cls: type, args: argparse.Namespace, prefix: str = "", **fixed: Any) -> Any:
    """``cls`` (its sections too) filled from the flags given under ``prefix``, the fields'
    defaults elsewhere, and ``fixed``."""
    values = {f.name: getattr(args, prefix + f.name) for f in flag_fields(cls) if hasattr(args, prefix + f.name)}
    for f in dataclasses.fields(cls):
        sub = section_type(f)
        if sub is not None and f.default is not None and f.name not in fixed:  # None: an optional section
            values[f.name] = from_args(sub, args, f"{prefix}{f.name}.")
    return cls(**{**values, **fixed})
