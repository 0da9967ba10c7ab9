"""Per-sample minimum perturbation norms, sorted, one curve per model.

This is the DeepFool figure of Liu et al., "Decoupled Networks" (CVPR 2018). It shows,
for every test sample, the smallest perturbation that flips its label, sorted in
increasing order. A higher curve belongs to a model that needs larger perturbations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robustdc.plots.series import ATTACK_LABELS, NORM_LABELS, attack_title, model_series
from robustdc.plots.style import (
    PlotError,
    add_legend,
    panel_figure,
    plain_text,
    series_style,
    style_indices,
)
from robustdc.results import KEY_COLUMNS, ResultsFileError, ResultsStore

logger = logging.getLogger(__name__)

#: Norms in panel order.
NORMS: tuple[str, ...] = ("l2", "linf")
#: Markers per curve; curves have hundreds of points, so only a few carry a marker.
MARKERS_PER_CURVE = 8


@dataclass(frozen=True)
class NormCurve:
    """The per-sample norms of one minimum-norm evaluation of one model.

    Attributes:
        label: legend label of the model.
        norm: ``l2`` or ``linf``, the norm the attack minimized and ``values`` measures.
        values: float64 (K,) norms of the K samples the attack flipped, in pixel units.
        n_examples: number of evaluated samples, flipped or not.
    """

    label: str
    norm: str
    values: np.ndarray
    n_examples: int


def load_norm_curves(
    store: ResultsStore, frame: pd.DataFrame, attack: str = "deepfool"
) -> tuple[list[NormCurve], list[str]]:
    """Load the per-sample norms of the ``attack`` rows of ``frame`` from ``store``.

    Only samples that the attack flipped are kept: samples misclassified without attack
    need no perturbation, and a sample the attack did not flip has no minimal norm.

    Returns:
        The curves in :func:`~robustdc.plots.series.model_series` order, and one
        message per row whose norms file is missing or unreadable (those rows are
        skipped).
    """
    if frame.empty:
        return [], []
    rows = frame[(frame["kind"] == "minimum-norm") & (frame["attack"] == attack)]
    curves: list[NormCurve] = []
    problems: list[str] = []
    for label, group in model_series(rows):
        for norm in NORMS:
            for _, row in group[group["norm"] == norm].iterrows():
                key = {name: row[name] for name in KEY_COLUMNS}
                try:
                    norms = store.load_sample_norms(key)
                except (FileNotFoundError, ResultsFileError) as err:
                    logger.warning("skipping the %s %s norms of %s: %s", attack, norm, label, err)
                    problems.append(str(err))
                    continue
                values = norms.l2 if norm == "l2" else norms.linf
                curves.append(
                    NormCurve(
                        label=label,
                        norm=norm,
                        values=np.asarray(values[norms.fooled], dtype=np.float64),
                        n_examples=len(values),
                    )
                )
    return curves, problems


@plain_text
def plot_perturbation_norms(
    curves: Sequence[NormCurve],
    attack: str = "deepfool",
    label_order: Sequence[str] | None = None,
) -> Figure:
    """Draw the sorted per-sample norms, one panel per norm and one curve per model.

    All models share each panel's axes. The x axis is the rank of the sample after
    sorting by norm, so a curve ends at the number of samples the attack flipped.
    ``label_order`` fixes the colours as in :func:`~robustdc.plots.style.style_indices`.

    Raises:
        PlotError: no curve with at least one value.
    """
    curves = [curve for curve in curves if len(curve.values)]
    if not curves:
        raise PlotError(f"no per-sample {attack} norms to plot")
    norms = [norm for norm in NORMS if any(curve.norm == norm for curve in curves)]
    styles = style_indices(list(dict.fromkeys(curve.label for curve in curves)), label_order)

    figure = panel_figure(len(norms))
    axes = figure.subplots(1, len(norms), squeeze=False)[0]
    handles: dict[str, object] = {}
    for axis, norm in zip(axes, norms, strict=True):
        for curve in (curve for curve in curves if curve.norm == norm):
            values = np.sort(curve.values)
            style = series_style(styles[curve.label])
            (line,) = axis.plot(
                np.arange(1, len(values) + 1),
                values,
                label=curve.label,
                markevery=max(1, len(values) // MARKERS_PER_CURVE),
                markersize=4,
                **style,
            )
            handles.setdefault(curve.label, line)
        norm_label = NORM_LABELS[norm]
        axis.set_title(attack_title(attack, norm))
        axis.set_xlabel("test sample, sorted by norm (rank)")
        axis.set_ylabel(f"{norm_label} norm of x_adv - x (pixel units)")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    attack_label = ATTACK_LABELS.get(attack, attack)
    figure.suptitle(f"Minimum perturbation per flipped test sample ({attack_label})")
    add_legend(figure, list(handles.values()), list(handles), title="model")
    return figure
