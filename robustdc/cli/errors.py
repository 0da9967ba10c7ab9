"""Errors that the command line reports as one line, without a traceback."""


class UsageError(Exception):
    """A bad command-line value: the message names the value and the fix."""
