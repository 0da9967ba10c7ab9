"""The figures of the report, drawn from the results and embedded as PNG data URIs."""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from robustdc.plots import (
    PlotError,
    figure_bytes,
    load_norm_curves,
    plot_perturbation_norms,
    plot_robust_accuracy,
    plot_training_curves,
    save_figure,
    write_bytes_atomic,
)
from robustdc.plots.series import model_series
from robustdc.report.checkpoints import CheckpointSummary
from robustdc.results import ResultsStore

logger = logging.getLogger(__name__)

#: Folder of the workdir where ``robustdc features`` writes its figure by default.
PLOTS_DIR = "plots"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report.

    Attributes:
        name: file name without suffix, used when the figures are also saved as files.
        title: heading above the figure.
        caption: what the figure shows.
        png: the PNG file content that the report embeds.
        figure: the matplotlib figure, for saving SVG as well; None for a figure read
            from a PNG file.
    """

    name: str
    title: str
    caption: str
    png: bytes
    figure: Figure | None = None

    @property
    def data_uri(self) -> str:
        """The PNG as a ``data:`` URI, so the HTML file needs no other file."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def save(self, folder: Path) -> list[Path]:
        """Write the figure to ``folder`` as PNG and, when drawn here, SVG."""
        stem = folder / self.name
        if self.figure is not None:
            return save_figure(self.figure, stem)
        return [write_bytes_atomic(stem.with_name(f"{stem.name}.png"), self.png)]


def features_image_stem(workdir: str | os.PathLike[str], dataset: str) -> Path:
    """Return where ``robustdc features`` writes the figure of ``dataset`` by default.

    The path has no suffix; the files are ``.png`` and ``.svg``.
    """
    return Path(workdir) / PLOTS_DIR / f"features-{dataset}"


def dataset_figures(
    store: ResultsStore,
    frame: pd.DataFrame,
    dataset: str,
    checkpoints: list[CheckpointSummary],
    features_dataset: str | None = None,
) -> tuple[list[ReportFigure], list[str]]:
    """Draw the figures of one dataset's rows.

    The ``robustdc features`` figure of ``features_dataset`` (default ``dataset``) is
    embedded when the workdir has one.

    Returns:
        The figures that have data, and notes about data that could not be read, such
        as a missing per-sample norms file.
    """
    figures: list[ReportFigure] = []
    notes: list[str] = []
    # One colour per model across all figures of the dataset.
    order = [label for label, _ in model_series(frame)]
    for kind in ("white-box", "transfer"):
        try:
            figure = plot_robust_accuracy(frame, kind=kind, label_order=order)
        except PlotError:
            continue
        figures.append(
            _drawn(
                f"{dataset}-robust-accuracy-{kind}",
                f"Robust accuracy vs epsilon ({kind})",
                f"{kind.capitalize()} robust accuracy of each model against the attack "
                "budget, one panel per attack and norm.",
                figure,
            )
        )

    curves, problems = load_norm_curves(store, frame)
    notes.extend(problems)
    try:
        figure = plot_perturbation_norms(curves, label_order=order)
    except PlotError:
        pass
    else:
        figures.append(
            _drawn(
                f"{dataset}-deepfool-norms",
                "DeepFool perturbation norms per test sample",
                "For each test example DeepFool flipped, the norm of the smallest "
                "perturbation it found, sorted in increasing order; a higher curve means "
                "larger perturbations are needed.",
                figure,
            )
        )

    metrics = {
        summary.label: summary.metrics for summary in checkpoints if summary.metrics is not None
    }
    try:
        figure = plot_training_curves(metrics, label_order=order)
    except PlotError:
        pass
    else:
        figures.append(
            _drawn(
                f"{dataset}-training",
                "Training curves",
                "Loss and accuracy per epoch from each checkpoint's metrics.csv. For "
                "adversarial training the loss and training accuracy include the "
                "adversarial examples.",
                figure,
            )
        )

    features_dataset = features_dataset or dataset
    features = _features_image(
        features_image_stem(store.workdir, features_dataset), features_dataset
    )
    if features is not None:
        figures.append(features)
    return figures, notes


def _drawn(name: str, title: str, caption: str, figure: Figure) -> ReportFigure:
    return ReportFigure(name, title, caption, figure_bytes(figure, "png"), figure)


def _features_image(stem: Path, dataset: str) -> ReportFigure | None:
    path = stem.with_name(f"{stem.name}.png")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        logger.warning("cannot read %s: %s", path, err)
        return None
    if not data.startswith(_PNG_SIGNATURE):
        logger.warning("%s is not a PNG file; the report leaves it out", path)
        return None
    written = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    caption = (
        f"2-d features of the mnist2d models on {dataset} test images, coloured by "
        f"class, as drawn by robustdc features ({path}, written "
        f"{written.isoformat(timespec='seconds')})."
    )
    return ReportFigure(f"features-{dataset}", "2-d features (mnist2d)", caption, data)
