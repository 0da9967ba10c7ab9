"""Conversion between result rows, pandas frames and CSV text, following the schema.

Rows passed in by callers are validated and coerced column by column, so that the
table never stores numbers as strings. CSV files are read with every cell as text and
parsed by the same schema, so a file that does not fit is reported, not guessed at.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from robustdc.results.errors import ResultsFileError
from robustdc.results.schema import (
    COLUMN_NAMES,
    COLUMNS,
    COLUMNS_BY_NAME,
    EVALUATION_KINDS,
    KEY_COLUMNS,
    Column,
)

RowKey = tuple[Any, ...]

# Key text columns that may be empty: white-box rows have no transfer source.
_OPTIONAL_KEY_TEXT = frozenset({"source"})


def empty_frame() -> pd.DataFrame:
    """Return a results table with every schema column and no rows."""
    return _typed_frame({column.name: [] for column in COLUMNS}, extra_columns=[])


def runtime_versions() -> dict[str, str]:
    """Return ``robustdc_version`` and ``torch_version`` of the installed packages.

    A package that is not installed gives ``""``. Reads package metadata only, so
    torch is not imported.
    """
    versions = {}
    for column, package in (("robustdc_version", "robustdc"), ("torch_version", "torch")):
        try:
            versions[column] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[column] = ""
    return versions


def rows_to_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Validate rows given by a caller and return them as a typed results table.

    Missing non-key values become NaN, ``<NA>`` or the column default, and a missing
    ``created`` becomes the current UTC time. Dicts and lists in JSON columns are
    serialized with sorted keys.

    Raises:
        ValueError: an unknown column, a missing or empty key value, an unknown
            ``kind``, a value of the wrong type, or two rows with the same key.
    """
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    columns: dict[str, list[Any]] = {name: [] for name in COLUMN_NAMES}
    seen: dict[RowKey, int] = {}
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"row {index} must be a dict, got {type(record).__name__}")
        unknown = sorted(set(record) - set(COLUMN_NAMES))
        if unknown:
            raise ValueError(
                f"row {index} has unknown column(s) {', '.join(unknown)}; add new columns "
                "to COLUMNS in robustdc/results/schema.py"
            )
        for column in COLUMNS:
            value = _coerce(column, record.get(column.name), index)
            if column.name == "created" and value == "":
                value = created
            columns[column.name].append(value)
        key = tuple(columns[name][-1] for name in KEY_COLUMNS)
        key = _hashable_key(key)
        if key in seen:
            raise ValueError(f"rows {seen[key]} and {index} have the same key {describe_key(key)}")
        seen[key] = index
    return _typed_frame(columns, extra_columns=[])


def normalize_key(key: Mapping[str, Any]) -> RowKey:
    """Validate a row key given as a dict and return it as a comparable tuple.

    Entries that are not key columns are ignored, so a whole row may be passed.

    Raises:
        ValueError: a key column is missing or has an invalid value.
    """
    missing = [name for name in KEY_COLUMNS if name not in key]
    if missing:
        raise ValueError(
            f"key is missing {', '.join(missing)}; a key has: {', '.join(KEY_COLUMNS)}"
        )
    values = tuple(_coerce(COLUMNS_BY_NAME[name], key[name], None) for name in KEY_COLUMNS)
    return _hashable_key(values)


def frame_keys(frame: pd.DataFrame) -> list[RowKey]:
    """Return the key tuple of every row of a typed results table, in row order."""
    columns = [frame[name].tolist() for name in KEY_COLUMNS]
    return [_hashable_key(values) for values in zip(*columns, strict=True)]


def describe_key(key: RowKey) -> str:
    """Format a key tuple as ``name=value`` pairs for messages."""
    return ", ".join(f"{name}={value!r}" for name, value in zip(KEY_COLUMNS, key, strict=True))


def read_csv(path: Path) -> pd.DataFrame:
    """Read a results CSV file into a typed table.

    Columns that the schema does not know are kept as text after the schema columns.

    Raises:
        ResultsFileError: the file cannot be decoded or parsed, lacks key columns,
            or contains a value that does not fit its column.
    """
    advice = "move it away or choose another --workdir"
    try:
        text_frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8"
        )
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ResultsFileError(
            f"{path} is not a robustdc results file ({reason}); {advice}"
        ) from err

    missing = [name for name in KEY_COLUMNS if name not in text_frame.columns]
    if missing:
        raise ResultsFileError(
            f"{path} is not a robustdc results file (missing columns: "
            f"{', '.join(missing)}); {advice}"
        )

    columns: dict[str, list[Any]] = {}
    for column in COLUMNS:
        if column.name not in text_frame.columns:
            columns[column.name] = [_coerce(column, None, None)] * len(text_frame)
            continue
        values = []
        for row, text in enumerate(text_frame[column.name].tolist()):
            try:
                values.append(_parse_text(column, text))
            except ValueError as err:
                raise ResultsFileError(
                    f"{path} row {row + 1}, column {column.name}: {err}; {advice}"
                ) from err
        columns[column.name] = values
    extra = sorted(name for name in text_frame.columns if name not in COLUMNS_BY_NAME)
    for name in extra:
        columns[name] = text_frame[name].tolist()
    return _typed_frame(columns, extra_columns=extra)


def write_csv(frame: pd.DataFrame, file: IO[str]) -> None:
    """Write a typed results table as CSV: schema columns first, NaN as empty cells.

    Floats are written with Python's shortest round-trip repr, so a float read back
    compares equal to the one written.
    """
    order = [*COLUMN_NAMES, *sorted(name for name in frame.columns if name not in COLUMNS_BY_NAME)]
    frame.to_csv(file, columns=order, index=False, na_rep="", lineterminator="\n")


def concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate typed results tables, keeping schema dtypes and extra text columns.

    An extra column missing from some of the frames is ``""`` in their rows.
    """
    extra = sorted({name for frame in frames for name in frame.columns} - set(COLUMN_NAMES))
    columns: dict[str, list[Any]] = {name: [] for name in [*COLUMN_NAMES, *extra]}
    for frame in frames:
        for name, values in columns.items():
            if name in frame.columns:
                values.extend(frame[name].tolist())
            else:
                values.extend([""] * len(frame))
    return _typed_frame(columns, extra_columns=extra)


def _typed_frame(columns: Mapping[str, list[Any]], extra_columns: list[str]) -> pd.DataFrame:
    data = {}
    for column in COLUMNS:
        values = columns[column.name]
        if column.kind in ("str", "json"):
            data[column.name] = pd.Series(values, dtype=object).astype(str)
        elif column.kind == "float":
            data[column.name] = pd.Series(values, dtype="float64")
        elif column.kind == "int":
            data[column.name] = pd.Series(values, dtype="int64")
        else:
            data[column.name] = pd.Series(values, dtype="Int64")
    for name in extra_columns:
        data[name] = pd.Series(columns[name], dtype=object).astype(str)
    return pd.DataFrame(data)


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _coerce(column: Column, value: Any, row: int | None) -> Any:
    """Return ``value`` converted to ``column``'s kind, or raise ``ValueError``."""
    where = f"row {row}, column {column.name}" if row is not None else f"key {column.name}"
    if isinstance(value, np.generic):
        value = value.item()

    if column.kind in ("str", "json"):
        text = _coerce_text(column, value, where)
        if column.key and text == "" and column.name not in _OPTIONAL_KEY_TEXT:
            raise ValueError(f"{where} must be a non-empty string, got {value!r}")
        if column.name == "kind" and text not in EVALUATION_KINDS:
            raise ValueError(
                f"{where} must be one of: {', '.join(EVALUATION_KINDS)}, got {value!r}"
            )
        return text

    if column.kind == "float":
        if _is_missing(value):
            return math.nan
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)

    if _is_missing(value):
        if column.kind == "int":
            raise ValueError(f"{where} is required, got {value!r}")
        return pd.NA
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where} must be an integer, got {value!r}")
    return int(value)


def _coerce_text(column: Column, value: Any, where: str) -> str:
    if _is_missing(value):
        return column.default
    if column.kind == "json":
        if isinstance(value, str):
            try:
                json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where} is not valid JSON: {err}") from err
            return value
        try:
            return json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where} cannot be written as JSON: {err}") from err
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}")
    return value


def _parse_text(column: Column, text: str) -> Any:
    """Parse one CSV cell of ``column``. An empty cell is a missing value."""
    if column.kind in ("str", "json"):
        return text
    if column.kind == "float":
        return math.nan if text == "" else float(text)
    if text == "":
        if column.kind == "int":
            raise ValueError("empty cell in a required integer column")
        return pd.NA
    return int(text)


def _hashable_key(values: Iterable[Any]) -> RowKey:
    # NaN != NaN, so a missing epsilon becomes None for comparisons and hashing.
    return tuple(None if _is_missing(value) else value for value in values)
