"""The parsers of ``facepipe``'s subcommands that read an output or measure one: evaluations
(``eval-cluster``, ``eval-detect``) and tools over an output (``report``, ``forget``,
``search``); ``facepipe.cli`` builds the whole parser and keeps the error contract."""

from __future__ import annotations

import argparse

from facepipe import commands
from facepipe.flags import add_flags, positive_int


def _output(p: argparse.ArgumentParser, what: str = "the job's output root (local or s3://)") -> None:
    p.add_argument("--output", "-o", required=True, help=what)


def _dt_run_id(p: argparse.ArgumentParser, dt_help: str, run_id_help: str) -> None:
    p.add_argument("--dt", default="", help=dt_help)
    p.add_argument("--run-id", default="", help=run_id_help)


def _evaluations(sub) -> None:
    from facepipe.config import ComputeConfig
    from facepipe.stages.decode import DecodeConfig
    from facepipe.stages.detect.stage import DetectConfig

    ec = sub.add_parser("eval-cluster", help="identity quality against known labels (pairwise/BCubed P/R/F, NMI)")
    _output(ec)
    ec.add_argument("--labels", required=True, help="CSV with a header: image_id or source_uri, label[, face_index]")
    ec.set_defaults(func=commands.cmd_eval_cluster)
    e = sub.add_parser("eval-detect", help="recall, precision and AP of a detector against ground-truth boxes")
    e.add_argument("images", metavar="IMAGES", help="folder the ground truth's image names are relative to")
    e.add_argument("--boxes", required=True, help="ground truth: dlib imglab XML or WIDER FACE's bbx_gt.txt")
    e.add_argument("--format", choices=("auto", "imglab", "wider"), default="auto", help="ground-truth format")
    add_flags(e, DetectConfig, prefix="detect.", skip=("nms_threshold", "batch_size"))
    add_flags(e, DecodeConfig, prefix="decode.", skip=("max_pixels",))
    add_flags(e, ComputeConfig, prefix="compute.", only=("device",))
    e.set_defaults(func=commands.cmd_eval_detect)


def _outputs(sub) -> None:
    rp = sub.add_parser("report", help="one self-contained HTML page of a run: counts, charts, identities, failures")
    _output(rp)
    _dt_run_id(rp, "the date whose latest run to show", "the run to show (default: the latest, of --dt when given)")
    rp.add_argument("--html", default="", metavar="PATH", help="where to write it (default: OUT/_runs/RUN_ID.html)")
    rp.set_defaults(func=commands.cmd_report)
    fg = sub.add_parser("forget", help="erase a person or images from every table, keep them out, audit it")
    _output(fg)
    for name, what in (("--identity-id", "this identity's faces"), ("--image-id", "this image and its faces")):
        fg.add_argument(name, action="append", default=[], metavar="ID", help=f"erase {what} (repeatable)")
    fg.add_argument("--source-prefix", action="append", default=[], metavar="URI", help="erase every image under URI")
    fg.add_argument("--request-id", default="", help="names the audit record (default: forget-TIMESTAMP-RANDOM)")
    fg.add_argument("--requested-by", default="", help="who asked, for the audit record (default: the OS user)")
    fg.add_argument("--reason", default="", help="why, for the audit record (a ticket number; no personal data)")
    fg.add_argument("--dry-run", action="store_true", help="print what would be erased; write nothing")
    fg.set_defaults(func=commands.cmd_forget)
    se = sub.add_parser(
        "search", help="the archive's faces nearest each face of some photos: where else is this person?"
    )
    _output(se)
    se.add_argument("photos", nargs="+", metavar="PHOTO_OR_DIR", help="query photos or folders (local or s3://)")
    se.add_argument("--k", type=positive_int, default=20, help="nearest faces per query face (default 20)")
    se.add_argument("--identity", action="store_true", help="also every other face of each matched identity")
    se.add_argument(
        "--json", action="store_true", help="one JSON object per result line (query, query_face, rank, ...)"
    )
    se.set_defaults(func=_search)


def _search(a: argparse.Namespace) -> int:
    from facepipe.tools.search import cmd_search

    return cmd_search(a)
