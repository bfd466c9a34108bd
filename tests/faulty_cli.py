"""`facepipe` as a process, with faults placed for a test (test-only; the job has no such hooks).

    python tests/faulty_cli.py [--batch-delay S] [--crash-at FUNCTION] -- run INPUT... --output OUT ...

- ``--batch-delay S``: every batch of the model actors takes S seconds longer, so a test can
  reliably act while batches are in flight. The slowed actor class is defined in this
  ``__main__`` module, which Ray ships to the workers by value; the job's code is unchanged.
- ``--fail-in score``: the run's scoring raises a ValueError (as pyarrow's ArrowInvalid is one),
  after the tables are published: the job's own failure, not the user's.
- ``--crash-at FUNCTION``: the driver dies (``os._exit(137)``, no cleanup, like a killed process)
  when the run calls ``facepipe.run.state.FUNCTION`` (``purge``: after publishing, before purging
  changed units; ``record``: after purging, before recording the input state).
"""

import argparse
import os
import sys
import time

import facepipe.run.state as state
import facepipe.run.steps as steps
from facepipe.cli import main

parser = argparse.ArgumentParser()
parser.add_argument("--batch-delay", type=float, default=0.0)
parser.add_argument("--crash-at", choices=["purge", "record"])
parser.add_argument("--fail-in", choices=["score"])
opts, rest = parser.parse_known_args()
BATCH_DELAY = opts.batch_delay

if BATCH_DELAY:

    class FaceActor(steps.FaceActor):
        def __call__(self, batch):
            time.sleep(BATCH_DELAY)
            return super().__call__(batch)

    steps.FaceActor = FaceActor  # the chain's model step (facepipe.run.steps) is this one

if opts.crash_at:

    def _crash(*args, **kwargs):
        os._exit(137)

    setattr(state, opts.crash_at, _crash)

if opts.fail_in == "score":
    import facepipe.run.job as job

    def _fail(*args, **kwargs):
        raise ValueError("ArrowInvalid: a scoring bug, placed by the test")

    job.run_score = _fail

sys.exit(main([a for a in rest if a != "--"]))
