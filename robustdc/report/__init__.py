"""The HTML comparison report: one self-contained file that compares models side by side.

:func:`build_report` reads a workdir's results table, per-sample norms and checkpoint
folders, draws the plots of :mod:`robustdc.plots` and renders the Jinja2 template shipped
in ``robustdc/report/templates`` with autoescaping on. Images are embedded as ``data:``
URIs and a Content-Security-Policy blocks everything else, so the file can be sent
alone and loads nothing when opened. Like the plots, the report neither trains nor
attacks.

Example::

    from robustdc.report import build_report

    report = build_report("runs", datasets=["mnist-sample"])
    report.write("reports/mnist-sample.html")
"""

from robustdc.report.build import (
    REPORTS_DIR,
    DatasetSection,
    Report,
    build_report,
    default_report_path,
)
from robustdc.report.figures import ReportFigure, features_image_stem
from robustdc.report.selection import ReportError, complete_columns, select_rows

__all__ = [
    "REPORTS_DIR",
    "DatasetSection",
    "Report",
    "ReportError",
    "ReportFigure",
    "build_report",
    "complete_columns",
    "default_report_path",
    "features_image_stem",
    "select_rows",
]
