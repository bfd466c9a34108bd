"""Ray job entrypoint for the extract job.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/extract.py s3://archive/photos/ --output s3://faces/out --dt 2026-11-23

Takes the flags of ``facepipe run`` (see ``facepipe run --help``). The job's driver connects to
the cluster it was submitted to (Ray sets RAY_ADDRESS). Exit status: 0 ok, 1 job failure,
2 bad flags or inputs -- a submitter (orchestrator) retries only on 1.
"""

import sys
from pathlib import Path

try:
    import facepipe  # noqa: F401  (installed on the cluster's nodes)
except ImportError:  # running from the uploaded working dir
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facepipe.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
