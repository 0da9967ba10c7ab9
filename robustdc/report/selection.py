"""Choosing the result rows of a report and filling columns that a table lacks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from robustdc.results import COLUMNS

#: Columns without which a result row cannot be placed in any table of the report.
REQUIRED_COLUMNS: tuple[str, ...] = ("dataset", "model", "attack", "kind")


class ReportError(ValueError):
    """The report cannot be built from the given results.

    The message gives the reason and the next step, such as running ``robustdc evaluate``.
    """


def complete_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with every schema column, adding missing ones as missing values.

    Tables exported by older versions, or built by hand, may lack optional columns such
    as the sanity-check measurements; the report shows those cells as ``-``.

    Raises:
        ReportError: a column of :data:`REQUIRED_COLUMNS` is missing.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in frame.columns]
    if missing:
        raise ReportError(
            f"the results table lacks the column(s) {', '.join(missing)}; every report "
            f"needs {', '.join(REQUIRED_COLUMNS)}"
        )
    completed = frame.copy()
    for column in COLUMNS:
        if column.name in completed.columns:
            continue
        if column.kind in ("str", "json"):
            completed[column.name] = column.default
        elif column.kind == "float":
            completed[column.name] = math.nan
        else:
            completed[column.name] = pd.Series([pd.NA] * len(completed), dtype="Int64")
    completed["epsilon"] = pd.to_numeric(completed["epsilon"], errors="coerce")
    return completed.reset_index(drop=True)


def select_rows(
    frame: pd.DataFrame,
    datasets: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    source: str = "results table",
) -> pd.DataFrame:
    """Return the rows of the given datasets and models, or raise a :class:`ReportError`.

    Args:
        frame: the whole results table.
        datasets: dataset names to keep; ``None`` keeps all.
        models: model names to keep; ``None`` keeps all.
        source: how messages name the table, e.g. its path.

    Raises:
        ReportError: the table is empty, or a requested dataset or model has no rows.
    """
    if frame.empty:
        raise ReportError(
            f"the {source} is empty; run robustdc evaluate first, then build the report"
        )
    frame = complete_columns(frame)
    if datasets:
        available = sorted(set(frame["dataset"]))
        missing = [name for name in datasets if name not in available]
        if missing:
            raise ReportError(
                f"no results for dataset(s) {', '.join(missing)} in the {source}; "
                f"datasets with results: {', '.join(available)}"
            )
        frame = frame[frame["dataset"].isin(datasets)]
    if models:
        available = sorted(set(frame["model"]))
        missing = [name for name in models if name not in available]
        if missing:
            raise ReportError(
                f"no results for model(s) {', '.join(missing)} in the {source}"
                + (f" for dataset(s) {', '.join(datasets)}" if datasets else "")
                + f"; models with results: {', '.join(available)}"
            )
        frame = frame[frame["model"].isin(models)]
    return frame.reset_index(drop=True)
