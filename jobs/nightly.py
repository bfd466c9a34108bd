"""Ray job entrypoint for one night: extract -> publish -> score -> cluster for one date.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/nightly.py s3://archive/incoming/ --output s3://faces/out --dt 2026-11-23

Takes the flags of ``facepipe run``; ``--dt`` is required and the run id defaults to
``nightly-DT``, so submitting the same night again redoes that night in place (idempotent). Only
input units new or changed since the published runs are processed (``--full``: all of them).
The run report (``facepipe report``) goes to ``OUT/_runs/RUN_ID.html`` unless ``--no-report``.
The last line of stdout is a JSON summary for the orchestrator (``--summary-json PATH`` writes it
to a file instead). Exit status: 0 ok, 1 job failure (worth retrying), 2 bad flags or inputs
(not worth retrying), 3 storage unreachable after the S3 client's retries (worth retrying later;
the summary line then says ``"status": "failed"``).
"""

import sys
from pathlib import Path

try:
    import facepipe  # noqa: F401  (installed on the cluster's nodes)
except ImportError:  # running from the uploaded working dir
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facepipe.cli import main


def nightly_argv(argv: list[str]) -> list[str] | None:
    """``facepipe run`` arguments for one night, or None when --dt is missing."""
    dt = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--dt"), None)
    dt = dt or next((a.split("=", 1)[1] for a in argv if a.startswith("--dt=")), None)
    if not dt:
        return None
    extra = []
    if not any(a == "--run-id" or a.startswith("--run-id=") for a in argv):
        extra += ["--run-id", f"nightly-{dt}"]
    if not any(a == "--summary-json" or a.startswith("--summary-json=") for a in argv):
        extra += ["--summary-json", "-"]
    if "--no-report" in argv:
        argv = [a for a in argv if a != "--no-report"]
    elif "--report" not in argv:
        extra += ["--report"]
    return ["run", *argv, *extra]


if __name__ == "__main__":
    args = nightly_argv(sys.argv[1:])
    if args is None:
        print("nightly: --dt YYYY-MM-DD is required (the night to process; it names the run)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args))
