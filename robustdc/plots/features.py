"""Scatter plots of 2-d features, as in the MNIST 2D-feature figures of decoupled networks.

The ``mnist2d`` architecture ends in a 2-d feature layer followed by a linear
classifier, so its features of the test images can be drawn directly. Each class forms
a wedge or cluster. The separation of the wedges shows how the operator and the
training shape the feature space (Liu et al., "Decoupled Networks", CVPR 2018).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from robustdc.plots.style import CLASS_COLORS, LEGEND_WIDTH, PlotError, new_figure, plain_text

#: Width and height in inches of one scatter panel.
FEATURE_PANEL_SIZE = 3.2
#: Width in inches of the class legend.
CLASS_LEGEND_WIDTH = LEGEND_WIDTH / 2


@dataclass(frozen=True)
class FeaturePanel:
    """The 2-d features of one model on a set of labelled images.

    Attributes:
        model: model name; one grid row per model.
        training: training kind, e.g. ``natural`` or ``fgsm``; one grid column per kind.
        features: float (N, 2) outputs of the model's feature layer.
        labels: int (N,) true classes in ``[0, len(class_names))``.
        accuracy: test accuracy of the model on these images, shown in the panel
            title; ``None`` leaves it out.
    """

    model: str
    training: str
    features: np.ndarray
    labels: np.ndarray
    accuracy: float | None = None


@plain_text
def plot_features(
    panels: Sequence[FeaturePanel],
    class_names: Sequence[str] | None = None,
    title: str = "2-d features of the test images",
) -> Figure:
    """Draw one scatter per panel, coloured by class, in a models x trainings grid.

    Rows follow the first appearance of each model in ``panels`` and columns that of
    each training kind, so natural and FGSM-trained versions of a model sit side by
    side. A model missing one training kind gets an empty cell. The name of each class
    is written at the median feature of its points.

    Args:
        panels: one entry per (model, training).
        class_names: names of the classes in label order; default ``0`` to ``9``.
        title: figure title.

    Raises:
        PlotError: no panels, a panel without points, features that are not (N, 2), or
            labels that do not match the features or the class names.
    """
    if not panels:
        raise PlotError("no 2-d features to plot")
    names = [str(index) for index in range(10)] if class_names is None else list(class_names)
    if len(names) > len(CLASS_COLORS):
        raise PlotError(
            f"the feature plot has colours for at most {len(CLASS_COLORS)} classes, "
            f"got {len(names)}"
        )
    for panel in panels:
        _check_panel(panel, len(names))

    models = list(dict.fromkeys(panel.model for panel in panels))
    trainings = list(dict.fromkeys(panel.training for panel in panels))
    figure = new_figure(
        FEATURE_PANEL_SIZE * len(trainings) + CLASS_LEGEND_WIDTH,
        FEATURE_PANEL_SIZE * len(models),
    )
    axes = figure.subplots(len(models), len(trainings), squeeze=False)
    by_cell = {(panel.model, panel.training): panel for panel in panels}
    for row, model in enumerate(models):
        for column, training in enumerate(trainings):
            axis = axes[row][column]
            panel = by_cell.get((model, training))
            if panel is None:
                axis.set_axis_off()
                axis.text(0.5, 0.5, f"{model}, {training}:\nnot drawn", ha="center", va="center")
                continue
            _draw_panel(axis, panel, names)

    handles = [
        Line2D([], [], linestyle="", marker="o", color=CLASS_COLORS[index], label=name)
        for index, name in enumerate(names)
    ]
    figure.legend(
        handles=handles,
        loc="outside right upper",
        title="class",
        frameon=False,
        fontsize="small",
    )
    figure.suptitle(title)
    return figure


def _check_panel(panel: FeaturePanel, num_classes: int) -> None:
    features = np.asarray(panel.features)
    labels = np.asarray(panel.labels)
    where = f"features of {panel.model} ({panel.training})"
    if features.ndim != 2 or features.shape[1] != 2:
        raise PlotError(f"{where} must have shape (N, 2), got {features.shape}")
    if len(features) == 0:
        raise PlotError(f"{where} contain no points")
    if labels.shape != (len(features),):
        raise PlotError(f"{where}: expected {len(features)} labels, got shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise PlotError(
            f"{where}: labels must be in [0, {num_classes}), got {labels.min()} to {labels.max()}"
        )
    if not np.isfinite(features).all():
        raise PlotError(f"{where} contain NaN or infinite values")


def _draw_panel(axis: Axes, panel: FeaturePanel, names: list[str]) -> None:
    features = np.asarray(panel.features, dtype=np.float64)
    labels = np.asarray(panel.labels)
    colors = np.asarray(CLASS_COLORS)[labels]
    # Rasterized points keep the SVG small; axes and text stay vectors.
    axis.scatter(
        features[:, 0], features[:, 1], c=colors, s=3, alpha=0.6, linewidths=0, rasterized=True
    )
    outline = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    for index, name in enumerate(names):
        points = features[labels == index]
        if len(points) == 0:
            continue
        center = np.median(points, axis=0)
        axis.text(
            center[0],
            center[1],
            name,
            ha="center",
            va="center",
            fontsize="medium",
            fontweight="bold",
            color=CLASS_COLORS[index],
            path_effects=outline,
        )
    title = f"{panel.model}, {panel.training}"
    if panel.accuracy is not None:
        title += f" (accuracy {100 * panel.accuracy:.1f}%)"
    axis.set_title(title, fontsize="medium")
    axis.set_xlabel("feature 1")
    axis.set_ylabel("feature 2")
    axis.grid(alpha=0.3)
