"""Errors a user can fix. The CLI prints them as one line (exit 2) instead of a traceback."""


class UserError(Exception):
    """A problem with the request: a bad flag value, a missing input, an unknown model."""
