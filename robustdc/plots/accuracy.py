"""Robust accuracy against the attack budget epsilon, one line per model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from robustdc.plots.series import NORM_LABELS, attack_sort_key, attack_title, model_series
from robustdc.plots.style import (
    PlotError,
    add_legend,
    panel_figure,
    plain_text,
    series_style,
    style_indices,
)

#: Evaluation kinds that have an epsilon to plot against.
BOUNDED_KINDS: tuple[str, ...] = ("white-box", "transfer")


@plain_text
def plot_robust_accuracy(
    frame: pd.DataFrame, kind: str = "white-box", label_order: Sequence[str] | None = None
) -> Figure:
    """Draw robust accuracy against epsilon, one panel per attack and norm.

    Every panel has one line per model (see :func:`~robustdc.plots.series.model_series`);
    transfer rows are also split by their source model. The y axis runs from 0 to 100%
    in every panel, so panels compare at a glance.

    Args:
        frame: results rows; rows of other kinds and rows without an epsilon are
            ignored.
        kind: ``white-box`` or ``transfer``.
        label_order: model labels in the order of their colours; see
            :func:`~robustdc.plots.style.style_indices`.

    Returns:
        A figure of ``PANEL_SIZE`` per panel plus ``LEGEND_WIDTH`` for the legend.

    Raises:
        ValueError: an unknown ``kind``.
        PlotError: no row of ``kind`` with an epsilon.
    """
    if kind not in BOUNDED_KINDS:
        raise ValueError(f"kind must be one of: {', '.join(BOUNDED_KINDS)}, got {kind!r}")
    rows = frame[(frame["kind"] == kind) & frame["epsilon"].notna()] if not frame.empty else frame
    if rows.empty:
        raise PlotError(f"no {kind} results with an epsilon to plot")

    panels = sorted(
        {(attack, norm) for attack, norm in zip(rows["attack"], rows["norm"], strict=True)},
        key=lambda pair: (attack_sort_key(pair[0]), pair[1]),
    )
    extra = ("source",) if kind == "transfer" else ()
    series = model_series(rows, extra=extra)
    sources = sorted(set(rows["source"])) if "source" in rows.columns else []
    styles = style_indices([label for label, _ in series], label_order)

    figure = panel_figure(len(panels))
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    handles: dict[str, object] = {}
    for axis, (attack, norm) in zip(axes, panels, strict=True):
        for label, group in series:
            points = group[(group["attack"] == attack) & (group["norm"] == norm)]
            points = points.sort_values("epsilon")
            if points.empty:
                continue
            (line,) = axis.plot(
                points["epsilon"],
                100 * points["robust_accuracy"],
                label=label,
                **series_style(styles[label]),
            )
            handles.setdefault(label, line)
        axis.set_title(attack_title(attack, norm))
        axis.set_xlabel(f"epsilon ({NORM_LABELS.get(norm, norm)}, pixel units in [0, 1])")
        axis.set_ylim(-2, 102)
        axis.yaxis.set_major_formatter(PercentFormatter(100))
        axis.grid(alpha=0.3)
        _pad_single_epsilon(axis, _epsilons(rows, attack, norm))
    axes[0].set_ylabel("robust accuracy (% of test examples)")

    title = "Robust accuracy vs epsilon, white-box"
    if kind == "transfer":
        title = f"Robust accuracy vs epsilon, transfer from {', '.join(sources)}"
    datasets = sorted(set(rows["dataset"])) if "dataset" in rows.columns else []
    if datasets:
        title += f" ({', '.join(datasets)})"
    figure.suptitle(title)
    add_legend(figure, list(handles.values()), list(handles), title="model")
    return figure


def _epsilons(rows: pd.DataFrame, attack: str, norm: str) -> list[float]:
    selected = rows[(rows["attack"] == attack) & (rows["norm"] == norm)]
    return sorted(set(selected["epsilon"]))


def _pad_single_epsilon(axis: Axes, epsilons: list[float]) -> None:
    # With one epsilon matplotlib centres a zero-width range on it. An axis from 0 to
    # twice the value puts the point on a readable epsilon scale.
    if len(epsilons) == 1 and math.isfinite(epsilons[0]) and epsilons[0] > 0:
        axis.set_xlim(0, 2 * epsilons[0])
