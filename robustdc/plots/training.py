"""Training curves: loss and accuracy per epoch, one line per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from robustdc.plots.style import (
    PlotError,
    add_legend,
    panel_figure,
    plain_text,
    series_style,
    style_indices,
)

#: Columns of a checkpoint's ``metrics.csv`` that the plot reads.
REQUIRED_COLUMNS: tuple[str, ...] = ("epoch", "loss", "train_accuracy", "test_accuracy")


@plain_text
def plot_training_curves(
    metrics: Mapping[str, pd.DataFrame], label_order: Sequence[str] | None = None
) -> Figure:
    """Draw training loss, and training and test accuracy, against the epoch.

    Args:
        metrics: per model label, the rows of its ``metrics.csv`` (one row per epoch
            with ``epoch``, ``loss``, ``train_accuracy`` and ``test_accuracy``;
            accuracies are fractions). For adversarial training the loss and training
            accuracy include the adversarial examples.
        label_order: model labels in the order of their colours; see
            :func:`~robustdc.plots.style.style_indices`.

    Raises:
        PlotError: no model with at least one epoch, or a frame that lacks a column.
    """
    for label, frame in metrics.items():
        missing = [name for name in REQUIRED_COLUMNS if name not in frame.columns]
        if missing:
            raise PlotError(f"training metrics of {label} lack column(s): {', '.join(missing)}")
    curves = {label: frame.sort_values("epoch") for label, frame in metrics.items() if len(frame)}
    if not curves:
        raise PlotError("no training metrics to plot")

    figure = panel_figure(2)
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    handles = []
    styles = style_indices(list(curves), label_order)
    for label, frame in curves.items():
        style = series_style(styles[label])
        (line,) = loss_axis.plot(frame["epoch"], frame["loss"], label=label, **style)
        handles.append(line)
        accuracy_axis.plot(frame["epoch"], 100 * frame["test_accuracy"], **style)
        train_style = {**style, "linestyle": ":", "markerfacecolor": "none"}
        accuracy_axis.plot(frame["epoch"], 100 * frame["train_accuracy"], **train_style)

    loss_axis.set_title("Training loss")
    loss_axis.set_ylabel("cross-entropy loss (mean per example)")
    accuracy_axis.set_title("Accuracy (solid: test, dotted: training)")
    accuracy_axis.set_ylabel("accuracy (%)")
    accuracy_axis.yaxis.set_major_formatter(PercentFormatter(100))
    last_epoch = max(int(frame["epoch"].max()) for frame in curves.values())
    for axis in (loss_axis, accuracy_axis):
        axis.set_xlabel("epoch")
        axis.set_xlim(0.5, last_epoch + 0.5)
        if last_epoch <= 10:
            axis.set_xticks(range(1, last_epoch + 1))
        else:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)

    kinds = [
        Line2D([], [], color="#555555", linestyle="-", marker="o"),
        Line2D([], [], color="#555555", linestyle=":", marker="o", markerfacecolor="none"),
    ]
    labels = [*curves, "test accuracy", "training accuracy"]
    add_legend(figure, [*handles, *kinds], labels, title="model")
    figure.suptitle("Training curves")
    return figure
