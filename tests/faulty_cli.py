"""`facepipe` as a process, with faults placed for a test (test-only; the job has no such hooks).

    python tests/faulty_cli.py [--batch-delay S] [--crash-at FUNCTION] -- run INPUT... --output OUT ...

- ``--batch-delay S``: every batch of the model actors takes S seconds longer, so a test can
  reliably act while batches are in flight. The slowed actor class is defined in this
  ``__main__`` module, which Ray ships to the workers by value; the job's code is unchanged.
- ``--fail-in score``: the run's scoring raises a ValueError (as pyarrow's ArrowInvalid is one),
  after the tables are published: the job's own failure, not the user's.
- ``--crash-at publish:TABLE``: the driver dies in the middle of publishing TABLE (its intent
  written and its new files moved in, the old ones not yet deleted) -- e.g. ``face_identity``:
  the identity snapshot half replaced.
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
from facepipe import schema
from facepipe.cli import main
from facepipe.storage.output import Output

parser = argparse.ArgumentParser()
parser.add_argument("--batch-delay", type=float, default=0.0)
parser.add_argument("--crash-at", choices=["purge", "record", *(f"publish:{t}" for t in schema.TABLES)])
parser.add_argument("--fail-in", choices=["score"])
opts, rest = parser.parse_known_args()
BATCH_DELAY = opts.batch_delay

if BATCH_DELAY:

    class FaceActor(steps.FaceActor):
        def __call__(self, batch):
            time.sleep(BATCH_DELAY)
            return super().__call__(batch)

    steps.FaceActor = FaceActor  # the chain's model step (facepipe.run.steps) is this one

if opts.crash_at and opts.crash_at.startswith("publish:"):
    table, roll_forward = opts.crash_at.split(":")[1], Output._roll_forward

    def _half(self, path, intent):
        if table not in intent["tables"]:
            return roll_forward(self, path, intent)
        for rel in intent["moves"]:  # the new files in, as the real one does first ...
            self.fs.create_dir(self.path(rel).rsplit("/", 1)[0], recursive=True)
            self.fs.move(self.staging_path(intent["run_id"], rel), self.path(rel))
        os._exit(137)  # ... and killed before the old ones are deleted

    Output._roll_forward = _half
elif opts.crash_at:

    def _crash(*args, **kwargs):
        os._exit(137)

    setattr(state, opts.crash_at, _crash)

if opts.fail_in == "score":
    import facepipe.run.job as job

    def _fail(*args, **kwargs):
        raise ValueError("ArrowInvalid: a scoring bug, placed by the test")

    job.run_score = _fail

sys.exit(main([a for a in rest if a != "--"]))
