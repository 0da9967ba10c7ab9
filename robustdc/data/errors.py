"""Exceptions raised by the data layer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are missing from the data directory.

    Attributes:
        name: dataset name, e.g. ``"mnist"``.
        data_dir: the data directory that was searched.
        expected_files: the file names that were looked for.
        searched: the folders that were searched, in order.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str,
        data_dir: Path,
        expected_files: Sequence[str],
        searched: Sequence[Path],
    ) -> None:
        super().__init__(message)
        self.name = name
        self.data_dir = data_dir
        self.expected_files = tuple(expected_files)
        self.searched = tuple(searched)


class DatasetFormatError(ValueError):
    """A dataset file exists but does not have the expected format.

    Raised for truncated files, invalid headers or shapes, labels out of range, and
    pickles that reference objects outside the allowed set.
    """


class DatasetChecksumError(DatasetFormatError):
    """A file's SHA-256 digest differs from the recorded one."""
