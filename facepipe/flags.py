"""Command-line flags declared on the config dataclasses they fill.

A config field users set from the command line is declared with :func:`flag`: its default, its
flag name and its help sit beside the field, once. :func:`add_flags` puts a config's flags on an
argparse parser or group; :func:`from_args` builds the config back from the parsed namespace.
The CLI never repeats a default or a field name.
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


def _dest(cls: type, f: dataclasses.Field) -> str:
    return f"{cls.__name__}.{f.name}"


def flag_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "flag" in f.metadata]


def add_flags(parser: Any, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add the flags ``cls`` declares (but the fields in ``skip``) to ``parser`` (or a group)."""
    for f in flag_fields(cls):
        if f.name in skip:
            continue
        spec: Flag = f.metadata["flag"]
        kw: dict[str, Any] = {"dest": _dest(cls, f), "default": f.default}
        if spec.action:
            kw["action"] = spec.action
            help = spec.help
        else:
            metavar = spec.metavar or (None if spec.choices else spec.name.lstrip("-").upper().replace("-", "_"))
            kw.update(type=spec.type, choices=spec.choices, metavar=metavar)
            kw = {k: v for k, v in kw.items() if v is not None or k == "default"}
            help = f"{spec.help} (default: {f.default})" if f.default not in (None, "") else spec.help
        parser.add_argument(spec.name, help=help, **kw)


def from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """``cls`` filled from the flags it declares (defaults where the parser had none), and ``fixed``."""
    values = {f.name: getattr(args, _dest(cls, f), f.default) for f in flag_fields(cls)}
    return cls(**{**values, **fixed})
