"""Ray job entrypoint for the extract job.

    ray job submit --address http://HEAD:8265 -- \\
        python -m facepipe.jobs.extract s3://archive/photos/ --output s3://faces/out --dt 2026-11-23

Takes the flags of ``facepipe run`` (see ``facepipe run --help``). The job's driver connects to
the cluster it was submitted to (Ray sets RAY_ADDRESS). Exit status: 0 ok, 1 job failure,
2 bad flags or inputs, 3 storage or cluster lost -- a submitter retries all but 2.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from facepipe.cli import main as cli_main

    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
