"""Ray job entrypoints, part of the installed package: ``python -m facepipe.jobs.nightly`` and
``python -m facepipe.jobs.extract`` run from any folder on any node that has facepipe, so a
runtime env's pip list or an image with the package needs no working dir (``jobs/*.py`` in the
repository are thin wrappers for a checkout uploaded as the working dir)."""
