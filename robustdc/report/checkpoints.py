"""Reading the checkpoint folders behind the result rows: config, dates and metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from robustdc.plots.series import model_series
from robustdc.train import CheckpointError, train_command
from robustdc.train.checkpoint import read_info, read_metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointSummary:
    """Checkpoint details of one evaluated model, as the report shows them.

    Attributes:
        label: the model's label in the report tables.
        name: checkpoint folder name, from the ``checkpoint`` column of the results.
        folder: ``<workdir>/models/<dataset>/<name>``.
        problem: why the folder could not be read; empty when it was read.
        epochs: finished epochs.
        seed: training seed.
        created: when training started (UTC, ISO 8601), as stored.
        test_accuracy: accuracy on the whole test split after the last epoch.
        command: the ``robustdc train`` command that trains this checkpoint.
        metrics: the rows of ``metrics.csv``; None when it could not be read.
    """

    label: str
    name: str
    folder: Path
    problem: str = ""
    epochs: int | None = None
    seed: int | None = None
    created: str = ""
    test_accuracy: float | None = None
    command: str = ""
    metrics: pd.DataFrame | None = None


def read_checkpoints(workdir: str | Path, frame: pd.DataFrame) -> list[CheckpointSummary]:
    """Read the checkpoint folder of every model in ``frame``.

    A model whose rows name no checkpoint, or whose folder is missing or invalid, gets a
    summary with ``problem`` set. Nothing raises, because the report is still useful
    without training details.
    """
    summaries = []
    for label, group in model_series(frame):
        dataset = str(group["dataset"].iloc[0])
        names = sorted({str(name) for name in group["checkpoint"] if str(name)})
        if not names:
            summaries.append(
                CheckpointSummary(label, "", Path(), problem="the results name no checkpoint")
            )
            continue
        for name in names:
            summaries.append(_read_one(label, Path(workdir) / "models" / dataset / name))
    return summaries


def _read_one(label: str, folder: Path) -> CheckpointSummary:
    name = folder.name
    try:
        info = read_info(folder)
    except CheckpointError as err:
        logger.warning("cannot read checkpoint %s: %s", folder, err)
        return CheckpointSummary(label, name, folder, problem=str(err))
    if info is None:
        return CheckpointSummary(label, name, folder, problem=f"{folder} not found")
    try:
        metrics = read_metrics(folder)
    except CheckpointError as err:
        logger.warning("cannot read the metrics of %s: %s", folder, err)
        metrics = None
    accuracy = info.metadata.get("test_accuracy")
    return CheckpointSummary(
        label=label,
        name=name,
        folder=folder,
        epochs=info.epochs_completed,
        seed=info.config.seed,
        created=info.created,
        test_accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
        command=train_command(info.config),
        metrics=metrics,
    )
