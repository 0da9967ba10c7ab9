"""Building the report: results and checkpoints in, one self-contained HTML text out."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import robustdc
from robustdc.plots import write_bytes_atomic
from robustdc.report.checkpoints import read_checkpoints
from robustdc.report.figures import ReportFigure, dataset_figures
from robustdc.report.metadata import (
    Item,
    checkpoint_items,
    report_items,
    results_items,
    threat_models,
    utc_now,
)
from robustdc.report.render import render_html
from robustdc.report.selection import select_rows
from robustdc.report.tables import (
    Table,
    WarningItem,
    minimum_norm_table,
    overview_table,
    robust_accuracy_table,
    unchecked_rows,
    warning_items,
)
from robustdc.results import ResultsStore

logger = logging.getLogger(__name__)

#: Folder of default report paths, relative to the working directory.
REPORTS_DIR = Path("reports")


@dataclass(frozen=True)
class DatasetSection:
    """The part of the report about one dataset."""

    dataset: str
    overview: Table
    white_box: Table | None
    transfer: Table | None
    minimum_norm: Table | None
    warnings: list[WarningItem]
    unchecked: int
    figures: list[ReportFigure]
    notes: list[str]
    checkpoints: list[tuple[str, list[Item]]]

    @property
    def anchor(self) -> str:
        """HTML id of the section: ``dataset-`` and the name with safe characters only."""
        return "dataset-" + re.sub(r"[^A-Za-z0-9_-]+", "-", self.dataset)


@dataclass(frozen=True)
class Report:
    """A rendered report.

    Attributes:
        title: the page title.
        html: the complete HTML document, with every image embedded.
        sections: one section per dataset, in the order shown.
        figures: every figure of the report, for :meth:`save_figures`.
    """

    title: str
    html: str
    sections: list[DatasetSection]
    figures: list[ReportFigure] = field(default_factory=list)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the HTML to ``path`` atomically and return the path.

        The folder must exist. On any error no file, partial or complete, is left at
        ``path`` (an earlier file there stays as it was).

        Raises:
            OutputPathError: the folder is missing or cannot be written.
        """
        return write_bytes_atomic(path, self.html.encode("utf-8"))

    def save_figures(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Write every figure to ``folder`` as PNG and SVG; return the written paths."""
        written = []
        for figure in self.figures:
            written.extend(figure.save(Path(folder)))
        return written


def default_report_path(datasets: Sequence[str]) -> Path:
    """Return ``reports/<dataset>.html``, or ``reports/results.html`` for several datasets."""
    name = datasets[0] if len(datasets) == 1 else "results"
    return REPORTS_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.html"


def build_report(
    workdir: str | os.PathLike[str],
    *,
    datasets: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    command_line: str | None = None,
    frame: pd.DataFrame | None = None,
    notes: Sequence[str] = (),
    features_dataset: str | None = None,
) -> Report:
    """Build the comparison report of the results in ``workdir``.

    Reads ``<workdir>/results.csv``, the per-sample norms beside it and the checkpoint
    folders under ``<workdir>/models/``; it neither trains nor attacks.

    Args:
        workdir: the work directory of ``robustdc evaluate``.
        datasets: datasets to include; ``None`` includes every dataset with results.
        models: model names to include; ``None`` includes all.
        command_line: the command that builds the report, shown in its metadata.
        notes: lines shown in every dataset section, e.g. how a run was reduced.
        features_dataset: dataset whose ``robustdc features`` figure every section
            embeds; ``None``: each section's own dataset.
        frame: results rows to report instead of ``<workdir>/results.csv``. Optional
            columns may be missing.

    Raises:
        ReportError: no results, or none for a requested dataset or model.
        ResultsFileError: ``results.csv`` exists but is not a results table.
    """
    store = ResultsStore(workdir)
    source = str(store.path)
    if frame is None:
        frame = store.read()
    else:
        source = "given results table"
    rows = select_rows(frame, datasets, models, source=f"results table {source}")
    generated = utc_now()

    sections = []
    figures: list[ReportFigure] = []
    for dataset in sorted(set(rows["dataset"])):
        section = _dataset_section(
            store, rows[rows["dataset"] == dataset], dataset, features_dataset or dataset
        )
        section.notes[:0] = list(notes)
        sections.append(section)
        figures.extend(section.figures)

    names = [section.dataset for section in sections]
    title = f"robustdc report: {', '.join(names)}"
    html = render_html(
        {
            "title": title,
            "version": robustdc.__version__,
            "generated": generated,
            "results_path": source,
            "sections": sections,
            "total_warnings": sum(len(section.warnings) for section in sections),
            "report_items": report_items(command_line, generated),
            "results_items": results_items(rows, source),
            "threat_models": threat_models(rows),
        }
    )
    logger.info("built the report of %d rows, %d figures", len(rows), len(figures))
    return Report(title=title, html=html, sections=sections, figures=figures)


def _dataset_section(
    store: ResultsStore, rows: pd.DataFrame, dataset: str, features_dataset: str
) -> DatasetSection:
    checkpoints = read_checkpoints(store.workdir, rows)
    figures, notes = dataset_figures(store, rows, dataset, checkpoints, features_dataset)
    if not (store.workdir / "models").exists():
        notes.append(f"no checkpoints found under {store.workdir / 'models'}")
    return DatasetSection(
        dataset=dataset,
        overview=overview_table(rows),
        white_box=robust_accuracy_table(rows, "white-box"),
        transfer=robust_accuracy_table(rows, "transfer"),
        minimum_norm=minimum_norm_table(rows),
        warnings=warning_items(rows),
        unchecked=unchecked_rows(rows),
        figures=figures,
        notes=notes,
        checkpoints=[(summary.label, checkpoint_items(summary)) for summary in checkpoints],
    )
