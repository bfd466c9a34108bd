"""Ray job entrypoint for one night: extract -> publish -> score -> cluster for one date.

    ray job submit --address http://HEAD:8265 -- \\
        python -m facepipe.jobs.nightly s3://archive/incoming/ --output s3://faces/out --dt 2026-11-23

Takes the flags of ``facepipe run``; ``--dt`` is required and the run id defaults to
``nightly-DT``, so submitting the same night again redoes that night in place (idempotent). Only
input units new or changed since the published runs are processed (``--full``: all of them).
The run report (``facepipe report``) goes to ``OUT/_runs/RUN_ID.html`` unless ``--no-report``.
The last line of stdout is a JSON summary for the orchestrator (``--summary-json PATH`` writes it
to a file instead). Exit status: 0 ok, 1 job failure (worth retrying), 2 bad flags or inputs
(not worth retrying), 3 storage unreachable after the S3 client's retries (worth retrying later;
the summary line then says ``"status": "failed"``).
"""

from __future__ import annotations

import argparse
import sys

USAGE_ERROR = "nightly: --dt YYYY-MM-DD is required (the night to process; it names the run)"


def nightly_argv(argv: list[str]) -> list[str] | None:
    """``facepipe run`` arguments for one night, or None when --dt is missing: the night's own
    flags are parsed (not searched for as strings); everything else goes to ``facepipe run``."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--dt")
    p.add_argument("--run-id")
    p.add_argument("--summary-json")
    p.add_argument("--report", action="store_true")
    p.add_argument("--no-report", action="store_true")
    night, rest = p.parse_known_args(argv)
    if not night.dt:
        return None
    run_id, summary = night.run_id or f"nightly-{night.dt}", night.summary_json or "-"
    report = [] if night.no_report else ["--report"]
    return ["run", *rest, "--dt", night.dt, "--run-id", run_id, "--summary-json", summary, *report]


def main(argv: list[str] | None = None) -> int:
    args = nightly_argv(sys.argv[1:] if argv is None else argv)
    if args is None:
        print(USAGE_ERROR, file=sys.stderr)
        return 2
    from facepipe.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
