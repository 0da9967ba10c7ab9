"""The results store: one CSV file per workdir, written atomically under a lock.

Why CSV: it is readable by any tool and needs no dependency beyond pandas, and the
table stays small (one row per model and attack setting), so rewriting the whole file
on every append is cheap.

Durability: every write goes to a temporary file in the same folder, which is flushed,
``fsync``-ed and then renamed over ``results.csv`` with ``os.replace``, so a process
killed at any moment leaves either the old or the new complete file. Concurrency:
appends hold an exclusive ``fcntl.flock`` on ``results.csv.lock`` from reading the
file to renaming the new one, so two processes appending at once both keep their rows.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from robustdc.results import samples
from robustdc.results.table import (
    concat_frames,
    describe_key,
    empty_frame,
    frame_keys,
    normalize_key,
    read_csv,
    rows_to_frame,
    write_csv,
)

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
EXPORT_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class AppendResult:
    """Counts of the rows that :meth:`ResultsStore.append` added, replaced and skipped.

    Attributes:
        added: rows whose key was new.
        replaced: existing rows overwritten (only with ``replace=True``).
        skipped: rows not written because their key existed and ``replace`` was
            false.
    """

    added: int
    replaced: int
    skipped: int


class ResultsStore:
    """The results table of one workdir, stored as ``<workdir>/results.csv``.

    Per-sample DeepFool norms are stored beside it under ``<workdir>/samples/``.

    Args:
        workdir: the folder, created on the first write.
    """

    def __init__(self, workdir: str | os.PathLike[str]) -> None:
        self.workdir = Path(workdir)
        self.path = self.workdir / RESULTS_FILE
        self.lock_path = self.workdir / f"{RESULTS_FILE}.lock"
        self.samples_dir = self.workdir / "samples"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.workdir)!r})"

    def read(self) -> pd.DataFrame:
        """Return the table with schema dtypes, or an empty table when there is no file.

        Raises:
            ResultsFileError: the file exists but is not a results table.
        """
        if not self.path.exists():
            return empty_frame()
        return read_csv(self.path)

    def has(self, key: Mapping[str, Any]) -> bool:
        """Return whether a row with this key exists.

        Args:
            key: a dict with every column of ``KEY_COLUMNS``; other entries are
                ignored, so a whole row works too. ``epsilon`` is ``None`` or NaN for
                minimum-norm rows.
        """
        wanted = normalize_key(key)
        return wanted in frame_keys(self.read())

    def get(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """Return the stored row with this key as a dict, or None if there is none."""
        wanted = normalize_key(key)
        frame = self.read()
        for position, row_key in enumerate(frame_keys(frame)):
            if row_key == wanted:
                return frame.iloc[position].to_dict()
        return None

    def append(
        self, rows: Iterable[Mapping[str, Any]] | pd.DataFrame, replace: bool = False
    ) -> AppendResult:
        """Add rows to the table, keeping every earlier row.

        A row whose key already exists replaces the stored row when ``replace`` is
        true and is skipped, with a log message, otherwise.

        Raises:
            ValueError: invalid rows (see
                :func:`~robustdc.results.table.rows_to_frame`).
            ResultsFileError: the existing file is not a results table; it is left
                untouched.
        """
        new = rows_to_frame(rows)
        if new.empty:
            return AppendResult(added=0, replaced=0, skipped=0)

        self.workdir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._remove_stale_temporaries()
            old = self.read()
            index_of = {key: index for index, key in enumerate(frame_keys(old))}
            added_rows = []
            replaced = skipped = 0
            for position, key in enumerate(frame_keys(new)):
                row = new.iloc[[position]]
                if key not in index_of:
                    added_rows.append(row)
                elif replace:
                    old = _replace_row(old, index_of[key], row)
                    replaced += 1
                else:
                    logger.info("skipped row that exists in %s: %s", self.path, describe_key(key))
                    skipped += 1
            if added_rows or replaced:
                combined = concat_frames([old, *added_rows])
                _atomic_write(self.path, lambda file: write_csv(combined, file))
        return AppendResult(added=len(added_rows), replaced=replaced, skipped=skipped)

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write the table to ``path`` (``.csv`` or ``.parquet``) and return the path.

        Raises:
            ValueError: an unsupported suffix.
            ImportError: ``.parquet`` without pyarrow or fastparquet installed.
            ResultsFileError: the results file is not a results table.
        """
        target = Path(path)
        suffix = target.suffix.lower()
        if suffix not in EXPORT_SUFFIXES:
            raise ValueError(
                f"cannot export to {target}: unsupported suffix {target.suffix!r}; "
                f"expected one of: {', '.join(EXPORT_SUFFIXES)}"
            )
        if suffix == ".parquet":
            _require_parquet_engine()
        frame = self.read()
        if target.resolve() == self.path.resolve():
            raise ValueError(f"cannot export {self.path} onto itself; choose another path")
        target.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            _atomic_write(target, lambda file: write_csv(frame, file))
        else:
            _atomic_write_binary(target, lambda file: frame.to_parquet(file, index=False))
        return target

    def sample_path(self, key: Mapping[str, Any]) -> Path:
        """Return the ``.npz`` path of the per-sample norms of the row ``key``."""
        return self.samples_dir / samples.file_name(normalize_key(key))

    def save_sample_norms(self, key: Mapping[str, Any], l2: Any, linf: Any, fooled: Any) -> Path:
        """Store per-sample perturbation norms for the row ``key`` and return the path.

        Args:
            key: the row key (see :meth:`has`).
            l2: (N,) L2 norms; numpy arrays and CPU tensors work.
            linf: (N,) Linf norms.
            fooled: (N,) bools, whether the attack flipped each sample.

        Raises:
            ValueError: arrays that are not 1-D of one length, or an invalid key.
        """
        normalized = normalize_key(key)
        path = self.samples_dir / samples.file_name(normalized)
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        arrays = samples.pack(normalized, l2, linf, fooled)
        _atomic_write_binary(path, lambda file: samples.write(file, arrays))
        return path

    def load_sample_norms(self, key: Mapping[str, Any]) -> samples.SampleNorms:
        """Load the per-sample norms stored for the row ``key``.

        Raises:
            FileNotFoundError: none are stored for this key.
            ResultsFileError: the file is unreadable or belongs to another key.
        """
        normalized = normalize_key(key)
        path = self.samples_dir / samples.file_name(normalized)
        if not path.exists():
            raise FileNotFoundError(
                f"no per-sample norms stored for {describe_key(normalized)} (expected {path})"
            )
        return samples.read(path, normalized)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            # NOTE: without fcntl, concurrent appends from two processes can lose rows.
            logger.warning("fcntl is unavailable; %s is written without a lock", self.path)
            yield
            return
        with open(self.lock_path, "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _remove_stale_temporaries(self) -> None:
        # Writers create temporaries only while holding the lock, so any temporary
        # seen under the lock belongs to a writer that was killed.
        for stale in self.workdir.glob(f".{RESULTS_FILE}.*.tmp"):
            logger.info("removing %s left by an interrupted write", stale)
            stale.unlink(missing_ok=True)


def _replace_row(frame: pd.DataFrame, index: int, row: pd.DataFrame) -> pd.DataFrame:
    updated = frame.copy()
    for name in row.columns:
        updated.at[index, name] = row.iloc[0][name]
    return updated


def _require_parquet_engine() -> None:
    if any(importlib.util.find_spec(engine) for engine in ("pyarrow", "fastparquet")):
        return
    raise ImportError(
        "exporting to .parquet needs pyarrow or fastparquet; install one "
        "(pip install pyarrow) or export to .csv"
    )


def _atomic_write(path: Path, write: Any) -> None:
    """Write text through ``write(file)`` to a temporary file, then rename it to ``path``."""
    _atomic_replace(path, write, mode="w")


def _atomic_write_binary(path: Path, write: Any) -> None:
    _atomic_replace(path, write, mode="wb")


def _atomic_replace(path: Path, write: Any, mode: str) -> None:
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        # mkstemp creates the file readable by its owner only. Keep the permissions of
        # the file being replaced, or use the usual 0o644 for a new file.
        os.chmod(temporary, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        file: IO[Any]
        encoding = "utf-8" if "b" not in mode else None
        with os.fdopen(
            descriptor, mode, encoding=encoding, newline="" if encoding else None
        ) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable. Folders cannot be opened this way on Windows.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(descriptor)
    except OSError:  # pragma: no cover - file systems without folder fsync
        pass
    finally:
        os.close(descriptor)
