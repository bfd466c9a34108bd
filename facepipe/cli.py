"""``facepipe`` command line: the parser and the error contract.

Each config dataclass declares its own flags (``facepipe.flags``); this module groups them per
subcommand, and ``facepipe.commands`` runs them. Errors a user can fix (a bad flag, a missing
input, an unknown detector), found before any work, print one line and exit 2; storage that
stays unreachable, or cluster work lost and not rebuilt, prints one line and exits 3 (``-v``
logs its traceback before it); anything else is the job's own failure: its traceback, then one
line last, exit 1 (docs/operations.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Sequence

from facepipe import __version__, commands
from facepipe.cli_tools import _dt_run_id, _evaluations, _output, _outputs
from facepipe.errors import ADVICE, UserError, retryable_error
from facepipe.flags import add_flags, sections
from facepipe.summary import failed_summary


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _ray_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local cluster)")


def _run(p: argparse.ArgumentParser) -> None:
    """``facepipe run``: INPUTs, --output, a config file or a past run to start from, and one flag
    per settable field of the config tree (``facepipe.config.RunConfig``), grouped by section."""
    from facepipe.config import RunConfig

    p.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image folder, Parquet file/folder or .tar shard(s); local or s3://"
    )
    p.add_argument("--output", "-o", default=None, help="output root (local path or s3://bucket/prefix)")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="settings from a TOML, YAML or JSON file ([detect] name = ...); flags override it",
    )
    p.add_argument(
        "--like",
        default=None,
        metavar="MANIFEST",
        help="rerun a past run exactly: the inputs, output, date and settings its manifest OUT/_runs/RUN_ID.json "
        "recorded (a new run id unless --run-id); flags given override them",
    )
    p.add_argument(
        "--summary-json", metavar="PATH", help="also a JSON summary for an orchestrator (- = stdout's last line)"
    )
    p.add_argument("--report", action="store_true", help="also write the run report OUT/_runs/RUN_ID.html")
    p.add_argument("--full-cluster", action="store_true", help="re-cluster every face (default: place tonight's faces)")
    _ray_address(p)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for path, cls, title in sections(RunConfig):  # a nested section's flags join its parent's group
        top = path.split(".")[0]
        group = groups.setdefault(top, p.add_argument_group(title or "run"))
        add_flags(group, cls, prefix=path)


def _stages(sub) -> None:
    from facepipe.stages.cluster.graph import IndexConfig
    from facepipe.stages.cluster.stage import ClusterConfig
    from facepipe.stages.score.stage import ScoreConfig

    cl = sub.add_parser("cluster", help="place the archive's new faces into identities (--full: re-cluster all)")
    cl.add_argument("--full", action="store_true", help="re-cluster every face instead of placing the new ones")
    co = sub.add_parser("correct", help="fix identities by hand (merge IDs; split --face; name ID --name): kept")
    co.add_argument("action", choices=("merge", "split", "name"))
    co.add_argument("identities", nargs="*", metavar="IDENTITY", help="identity ids (face_identity.identity_id)")
    co.add_argument("--face", action="append", default=[], metavar="FACE_ID", help="split: not its identity's person")
    texts = {"--name": "name: the identity's name", "--author": "who (default: the OS user)", "--note": "why"}
    for opt, what in texts.items():
        co.add_argument(opt, default="", help=what)
    co.add_argument("--no-apply", action="store_true", help="only record it: the next clustering applies it")
    for p, what in ((cl, "cluster"), (co, "correct")):  # the clustering they run
        _output(p)
        _dt_run_id(p, "date the snapshot is filed under (default: today, UTC)", f"run id (default: {what}-DT...)")
        add_flags(p, ClusterConfig, skip=("enabled",))
        add_flags(p, IndexConfig, prefix="index.")
        p.set_defaults(func=getattr(commands, f"cmd_{what}"))
    sc = sub.add_parser("score", help="DROCC outlier scores for the faces of one date partition")
    _output(sc)
    _dt_run_id(sc, "date partition YYYY-MM-DD (default: today, UTC)", "run id (default: score-DT; a rerun replaces it)")
    _ray_address(sc)
    add_flags(sc, ScoreConfig, skip=("enabled",))
    sc.set_defaults(func=commands.cmd_score)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="facepipe", description="Detect and index faces across image archives on Ray.")
    p.add_argument("--version", action="version", version=f"facepipe {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="extract faces from image archives into Parquet tables")
    _run(r)
    r.set_defaults(func=commands.cmd_run)
    d = sub.add_parser("demo", help="build a small demo archive from real photos and run the job on it")
    d.add_argument("--workdir", default="demo-output", help="where the archive and the output go")
    d.add_argument("--run-id", default="demo", help="run id (rerunning replaces it)")
    d.set_defaults(func=commands.cmd_demo)
    _stages(sub)
    _evaluations(sub)
    _outputs(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except UserError as e:
        print(f"facepipe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        failed = retryable_error(e)
        if failed is None:  # the job's own failure: its traceback for the log, then one line last
            traceback.print_exc()
            why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            print(f"facepipe {args.command}: failed: {why} (exit 1; the traceback above says where)", file=sys.stderr)
            failed_summary(args, "internal", why)
            return 1
        kind, why = failed
        logging.getLogger("facepipe").info("where it failed", exc_info=True)  # with -v only: the line below suffices
        print(f"facepipe {args.command}: {kind} error: {why}{ADVICE[kind]}", file=sys.stderr)
        failed_summary(args, kind, why)
        return 3


def entry() -> None:
    """The console script: :func:`main`, Ray shut down, then the process ends at once (the
    interpreter's teardown of torch and Ray took ~1 s and wrote nothing: all output is out)."""
    code = main()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
    logging.shutdown()
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
