"""The nightly job from a checkout uploaded as the working dir (``ray job submit --working-dir .
-- python jobs/nightly.py ...``); with the package installed, run ``python -m
facepipe.jobs.nightly`` instead (see facepipe/jobs/nightly.py for the flags and exit codes)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's facepipe, not another install

from facepipe.jobs.nightly import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
