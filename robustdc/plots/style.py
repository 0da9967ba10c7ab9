"""Colours, line styles and figure creation shared by every plot.

Figures are plain :class:`matplotlib.figure.Figure` objects attached to the Agg canvas,
so no pyplot state, GUI backend or display is involved and plotting works in threads
and on headless machines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Okabe and Ito, "Color Universal Design" (2008): eight colours that stay distinct
#: under the common forms of colour blindness. Used for one line per model.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow, last because it is faint on white
)

#: Line styles and markers cycled together with the colours, so that series stay
#: apart in greyscale prints and beyond eight models.
LINE_STYLES: tuple[str, ...] = ("-", "--", "-.", ":")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")

#: Ten class colours: Paul Tol's nine "muted" qualitative colours plus black.
# NOTE: no ten-colour palette stays distinct for every kind of colour blindness, so the
# feature scatter also writes each class name at the centre of its points.
CLASS_COLORS: tuple[str, ...] = (
    "#332288",  # indigo
    "#88CCEE",  # cyan
    "#44AA99",  # teal
    "#117733",  # green
    "#999933",  # olive
    "#DDCC77",  # sand
    "#CC6677",  # rose
    "#882255",  # wine
    "#AA4499",  # purple
    "#000000",  # black
)

#: Resolution of saved PNG files and of images embedded in the report.
DPI = 100
#: Width and height in inches of one panel of a multi-panel figure.
PANEL_SIZE = (4.0, 3.4)
#: Extra width in inches for a legend placed to the right of the panels.
LEGEND_WIDTH = 2.4


_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


class PlotError(ValueError):
    """Data that cannot be plotted, such as an empty table. The message gives the reason."""


def plain_text(function: Callable[_Params, _Result]) -> Callable[_Params, _Result]:
    """Run a plot function with mathtext off, so a ``$`` in a model name is drawn as is."""

    @functools.wraps(function)
    def wrapper(*args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        with matplotlib.rc_context({"text.parse_math": False}):
            return function(*args, **kwargs)

    return wrapper


def style_indices(labels: Sequence[str], order: Sequence[str] | None = None) -> dict[str, int]:
    """Map each series label to the index of its style.

    Labels in ``order`` take their position there, so that one model keeps its colour
    in every figure of a report. Other labels follow in their own order.
    """
    known = list(order or [])
    indices = {label: known.index(label) for label in labels if label in known}
    for label in labels:
        if label not in indices:
            indices[label] = len(known)
            known.append(label)
    return indices


def series_style(index: int) -> dict[str, object]:
    """Return matplotlib line keyword arguments of the ``index``-th series."""
    return {
        "color": OKABE_ITO[index % len(OKABE_ITO)],
        "linestyle": LINE_STYLES[(index // len(OKABE_ITO)) % len(LINE_STYLES)],
        "marker": MARKERS[index % len(MARKERS)],
    }


def new_figure(width: float, height: float) -> Figure:
    """Return an empty figure of ``width`` x ``height`` inches on the Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def panel_figure(columns: int, rows: int = 1, legend: bool = True) -> Figure:
    """Return a figure sized for a grid of panels, with room for a legend on the right."""
    width = PANEL_SIZE[0] * columns + (LEGEND_WIDTH if legend else 0.0)
    return new_figure(width, PANEL_SIZE[1] * rows)


def add_legend(
    figure: Figure, handles: Sequence[object], labels: Sequence[str], title: str
) -> None:
    """Place one legend for all panels to the right of them, clear of the title."""
    figure.legend(
        handles,
        labels,
        loc="outside right center",
        title=title,
        frameon=False,
        fontsize="small",
    )
