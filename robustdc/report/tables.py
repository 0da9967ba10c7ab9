"""The comparison tables of the report, built from result rows as plain cells.

Each table has one row per model (see :func:`robustdc.plots.model_series`), so models
are compared side by side. Cells carry their text, CSS classes and a tooltip. The
template escapes all text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from robustdc.plots.series import NORM_LABELS, attack_sort_key, attack_title, model_series

MISSING = "-"


@dataclass(frozen=True)
class Cell:
    """One table cell.

    Attributes:
        text: the displayed text.
        classes: CSS classes: ``num`` for numbers, ``warn`` for a result with
            sanity-check warnings.
        title: tooltip text; empty for none.
    """

    text: str
    classes: str = ""
    title: str = ""


@dataclass(frozen=True)
class Table:
    """A table with an optional row of column groups above the column names.

    Attributes:
        caption: one sentence that explains the cells.
        columns: column names.
        rows: one list of cells per row, as long as ``columns``.
        groups: ``(label, span)`` pairs over the columns; empty for no group row.
    """

    caption: str
    columns: list[str]
    rows: list[list[Cell]]
    groups: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class WarningItem:
    """One sanity-check warning of one result row."""

    model: str
    evaluation: str
    message: str


def parse_warnings(text: Any) -> list[str]:
    """Return the warnings stored in a ``warnings`` cell (a JSON list of strings).

    Text that is not a JSON list is returned as one warning, so nothing is hidden.
    """
    if not isinstance(text, str) or not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return [text]
    if isinstance(value, list):
        return [str(item) for item in value]
    return [str(value)]


def format_percent(value: Any) -> str:
    """Format a fraction as ``97.5%``; missing values give ``-``."""
    if _missing(value):
        return MISSING
    return f"{100 * float(value):.1f}%"


def format_number(value: Any, digits: int = 3) -> str:
    """Format a number with ``digits`` significant digits; missing values give ``-``."""
    if _missing(value):
        return MISSING
    return f"{float(value):.{digits}g}"


def describe_evaluation(row: pd.Series) -> str:
    """Describe a row's attack, e.g. ``BIM (Linf) epsilon=0.3, transfer from baseline``."""
    text = attack_title(str(row["attack"]), str(row["norm"]))
    if not _missing(row["epsilon"]):
        text += f" epsilon={format_number(row['epsilon'], 4)}"
    kind = str(row["kind"])
    if kind == "transfer":
        text += f", transfer from {row['source'] or 'unknown source'}"
    else:
        text += f", {kind}"
    return text


def overview_table(frame: pd.DataFrame) -> Table:
    """Build the model table: identity, clean accuracy, row count and warning count."""
    rows = []
    for label, group in model_series(frame):
        first = group.iloc[0]
        accuracies = sorted({float(v) for v in group["clean_accuracy"] if not _missing(v)})
        counts = sorted({int(v) for v in group["n_examples"] if not _missing(v)})
        clean = MISSING
        if accuracies:
            clean = format_percent(accuracies[0])
            if len(accuracies) > 1:
                clean += f" to {format_percent(accuracies[-1])}"
        warnings = sum(len(parse_warnings(text)) for text in group["warnings"])
        rows.append(
            [
                Cell(label),
                Cell(str(first["arch"]) or MISSING),
                Cell(str(first["angular"]) or MISSING),
                Cell(str(first["training"]) or MISSING),
                Cell(str(first["seed"]) if not _missing(first["seed"]) else MISSING, "num"),
                Cell(_joined(group["checkpoint"])),
                Cell(clean, "num", title="accuracy on the evaluated test examples"),
                Cell(", ".join(str(count) for count in counts) or MISSING, "num"),
                Cell(str(len(group)), "num"),
                Cell(str(warnings), "num warn" if warnings else "num"),
            ]
        )
    columns = ["model", "arch", "angular", "training", "seed", "checkpoint", "clean accuracy"]
    columns += ["test examples", "result rows", "warnings"]
    caption = (
        "Evaluated models. Clean accuracy is measured on the same test examples as the "
        "attacks; a range means that rows were evaluated on different example counts."
    )
    return Table(caption=caption, columns=columns, rows=rows)


def robust_accuracy_table(frame: pd.DataFrame, kind: str) -> Table | None:
    """Robust accuracy per model (rows) and attack, norm and epsilon (columns).

    Returns None when ``frame`` has no ``kind`` rows with an epsilon.
    """
    rows = frame[(frame["kind"] == kind) & frame["epsilon"].notna()]
    if rows.empty:
        return None
    columns_by_attack = _epsilon_columns(rows)
    extra = ("source",) if kind == "transfer" else ()
    body = []
    for label, group in model_series(rows, extra=extra):
        cells = [Cell(label)]
        for (attack, norm), epsilons in columns_by_attack:
            for epsilon in epsilons:
                match = group[
                    (group["attack"] == attack)
                    & (group["norm"] == norm)
                    & (group["epsilon"] == epsilon)
                ]
                cells.append(_robust_cell(match))
        body.append(cells)

    columns = ["model"]
    groups = [("", 1)]
    for (attack, norm), epsilons in columns_by_attack:
        groups.append((attack_title(attack, norm), len(epsilons)))
        columns += [f"epsilon {format_number(epsilon, 4)}" for epsilon in epsilons]
    if kind == "transfer":
        sources = ", ".join(sorted(set(rows["source"]))) or "unknown"
        caption = (
            f"Transfer (black-box) robust accuracy: adversarial examples crafted on "
            f"{sources} and classified by each model. A robust example is classified "
            "correctly both clean and under attack. Cells marked ! have sanity-check "
            "warnings; hover for details."
        )
    else:
        caption = (
            "White-box robust accuracy: the fraction of test examples classified correctly "
            "both clean and under attack. Cells marked ! have sanity-check warnings; hover "
            "for details."
        )
    return Table(caption=caption, columns=columns, rows=body, groups=groups)


def minimum_norm_table(frame: pd.DataFrame) -> Table | None:
    """Median minimum perturbation norm and success rate per model and attack.

    Returns None when ``frame`` has no minimum-norm rows.
    """
    rows = frame[frame["kind"] == "minimum-norm"]
    if rows.empty:
        return None
    pairs = sorted(
        {(attack, norm) for attack, norm in zip(rows["attack"], rows["norm"], strict=True)},
        key=lambda pair: (attack_sort_key(pair[0]), pair[1]),
    )
    body = []
    for label, group in model_series(rows):
        cells = [Cell(label)]
        for attack, norm in pairs:
            match = group[(group["attack"] == attack) & (group["norm"] == norm)]
            cells.extend(_minimum_norm_cells(match, norm))
        body.append(cells)
    columns = ["model"]
    groups = [("", 1)]
    for attack, norm in pairs:
        groups.append((attack_title(attack, norm), 2))
        columns += [f"median {NORM_LABELS.get(norm, norm)}", "flipped"]
    caption = (
        "Minimum-norm attacks: the median norm of the smallest perturbation that flips a "
        "correctly classified test example, in pixel units of images in [0, 1] (larger "
        "means more robust), over the examples the attack flipped. 'Flipped' is the "
        "fraction of correctly classified examples it flipped."
    )
    return Table(caption=caption, columns=columns, rows=body, groups=groups)


def warning_items(frame: pd.DataFrame) -> list[WarningItem]:
    """Return every sanity-check warning of ``frame``, grouped by model."""
    items = []
    for label, group in model_series(frame):
        for _, row in group.iterrows():
            for message in parse_warnings(row["warnings"]):
                items.append(WarningItem(label, describe_evaluation(row), message))
    return items


def unchecked_rows(frame: pd.DataFrame) -> int:
    """Count white-box rows without any sanity-check measurement.

    Such rows were evaluated with the sanity checks turned off, or come from a table
    without the sanity-check columns, so their robust accuracy was not checked for
    gradient masking.
    """
    rows = frame[frame["kind"] == "white-box"]
    measured = rows[["large_epsilon_robust_accuracy", "zero_gradient_fraction"]].notna()
    return int((~measured.any(axis=1)).sum())


def _epsilon_columns(rows: pd.DataFrame) -> list[tuple[tuple[str, str], list[float]]]:
    pairs = sorted(
        {(attack, norm) for attack, norm in zip(rows["attack"], rows["norm"], strict=True)},
        key=lambda pair: (attack_sort_key(pair[0]), pair[1]),
    )
    result = []
    for attack, norm in pairs:
        selected = rows[(rows["attack"] == attack) & (rows["norm"] == norm)]
        result.append(((attack, norm), sorted(set(selected["epsilon"]))))
    return result


def _robust_cell(match: pd.DataFrame) -> Cell:
    if match.empty:
        return Cell(MISSING, "num missing", title="not evaluated")
    row = match.iloc[0]
    warnings = parse_warnings(row["warnings"])
    tooltip = [f"attack success rate {format_percent(row['attack_success_rate'])}"]
    tooltip += [f"n = {row['n_examples']}"] if not _missing(row["n_examples"]) else []
    text = format_percent(row["robust_accuracy"])
    classes = "num"
    if warnings:
        text += " !"
        classes += " warn"
        tooltip += [f"warning: {message}" for message in warnings]
    return Cell(text, classes, title="; ".join(tooltip))


def _minimum_norm_cells(match: pd.DataFrame, norm: str) -> list[Cell]:
    if match.empty:
        return [Cell(MISSING, "num missing"), Cell(MISSING, "num missing")]
    row = match.iloc[0]
    warnings = parse_warnings(row["warnings"])
    classes = "num warn" if warnings else "num"
    spread = (
        f"10th to 90th percentile: {format_number(row[f'{norm}_p10'])} to "
        f"{format_number(row[f'{norm}_p90'])}"
        if f"{norm}_p10" in row.index
        else ""
    )
    tooltip = "; ".join([spread, *(f"warning: {message}" for message in warnings)])
    median = format_number(row.get(f"{norm}_median"))
    flipped = format_percent(row["attack_success_rate"])
    not_flipped = row["n_not_fooled"]
    flipped_title = (
        f"{int(not_flipped)} correctly classified example(s) not flipped"
        if not _missing(not_flipped)
        else ""
    )
    if warnings:
        flipped += " !"
    return [Cell(median, classes, title=tooltip), Cell(flipped, classes, title=flipped_title)]


def _joined(values: pd.Series) -> str:
    distinct = sorted({str(value) for value in values if str(value)})
    return ", ".join(distinct) or MISSING


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False
