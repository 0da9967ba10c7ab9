"""Exceptions of the results package."""

from __future__ import annotations


class ResultsFileError(RuntimeError):
    """A results file exists but is not a readable robustdc results table.

    The store never overwrites such a file. The message names the file, what is wrong
    with it and what to do (move it away or choose another workdir).
    """
