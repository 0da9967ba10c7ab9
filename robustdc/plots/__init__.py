"""Plots of robustness results, perturbation norms, 2-d features and training curves.

Every ``plot_*`` function takes data (result rows, per-sample norms, features or
per-epoch metrics), draws it with matplotlib's Agg canvas and returns the
:class:`~matplotlib.figure.Figure`; :func:`save_figure` writes it as PNG and SVG
atomically, and :func:`figure_bytes` renders it in memory. This package only reads and
draws: it neither trains nor attacks. Colours come from colour-blind-safe palettes.

Example::

    from robustdc.plots import plot_robust_accuracy, save_figure
    from robustdc.results import ResultsStore

    figure = plot_robust_accuracy(ResultsStore("runs").read(), kind="white-box")
    save_figure(figure, "plots/robust-accuracy")  # .png and .svg
"""

from robustdc.plots.accuracy import BOUNDED_KINDS, plot_robust_accuracy
from robustdc.plots.features import FEATURE_PANEL_SIZE, FeaturePanel, plot_features
from robustdc.plots.norms import NormCurve, load_norm_curves, plot_perturbation_norms
from robustdc.plots.output import (
    FIGURE_FORMATS,
    OutputPathError,
    check_output_folder,
    figure_bytes,
    save_figure,
    write_bytes_atomic,
)
from robustdc.plots.series import MODEL_COLUMNS, model_series
from robustdc.plots.style import (
    CLASS_COLORS,
    DPI,
    LEGEND_WIDTH,
    OKABE_ITO,
    PANEL_SIZE,
    PlotError,
)
from robustdc.plots.training import plot_training_curves

__all__ = [
    "BOUNDED_KINDS",
    "CLASS_COLORS",
    "DPI",
    "FEATURE_PANEL_SIZE",
    "FIGURE_FORMATS",
    "LEGEND_WIDTH",
    "MODEL_COLUMNS",
    "OKABE_ITO",
    "PANEL_SIZE",
    "FeaturePanel",
    "NormCurve",
    "OutputPathError",
    "PlotError",
    "check_output_folder",
    "figure_bytes",
    "load_norm_curves",
    "model_series",
    "plot_features",
    "plot_perturbation_norms",
    "plot_robust_accuracy",
    "plot_training_curves",
    "save_figure",
    "write_bytes_atomic",
]
