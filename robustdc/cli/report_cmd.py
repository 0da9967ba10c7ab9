"""``robustdc report``: write the HTML comparison report of a workdir's results.

    robustdc report --workdir runs --out reports/mnist-sample.html

writes ONE self-contained HTML file (images embedded, nothing loaded from elsewhere)
that compares the models side by side: clean, white-box and transfer robust accuracy,
DeepFool norms, the sanity-check warnings, the plots and the run metadata.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from robustdc.cli.errors import UsageError

logger = logging.getLogger("robustdc")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report",
        help="write one self-contained HTML report that compares the evaluated models",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs"),
        help="folder with results.csv and models/ (default: ./runs)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="comma-separated datasets to report (default: every dataset with results)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated model names to report, e.g. baseline,tanhconv (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="HTML file to write; its folder must exist (default: reports/DATASET.html, "
        "creating reports/)",
    )
    parser.add_argument(
        "--plots-dir",
        type=Path,
        default=None,
        help="also write every plot of the report into this folder as PNG and SVG",
    )
    parser.set_defaults(run=run)


def _names(option: str, text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError(f"invalid {option} {text!r}; give comma-separated names")
    return names


def run(args: argparse.Namespace) -> int:
    from robustdc.plots import OutputPathError
    from robustdc.report import ReportError, build_report, default_report_path
    from robustdc.results import ResultsFileError

    datasets = _names("--dataset", args.dataset)
    models = _names("--models", args.models)
    # Check an explicit output path before the (slower) build, so a typo fails fast.
    if args.out is not None:
        _check_writable(args.out)

    command_line = shlex.join(["robustdc", *getattr(args, "argv", sys.argv[1:])])
    try:
        report = build_report(
            args.workdir, datasets=datasets, models=models, command_line=command_line
        )
    except (ReportError, ResultsFileError) as err:
        raise UsageError(str(err)) from err

    out = args.out
    if out is None:
        out = default_report_path([section.dataset for section in report.sections])
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = report.write(out)
        plot_paths = []
        if args.plots_dir is not None:
            args.plots_dir.mkdir(parents=True, exist_ok=True)
            plot_paths = report.save_figures(args.plots_dir)
    except OutputPathError as err:
        raise UsageError(str(err)) from err
    except OSError as err:
        raise UsageError(f"cannot write {err.filename or out}: {err.strerror or err}") from err

    warnings = sum(len(section.warnings) for section in report.sections)
    size_kb = path.stat().st_size / 1024
    print(
        f"report: {path} ({size_kb:.0f} KiB, {len(report.figures)} figure(s), "
        f"{warnings} sanity-check warning(s))"
    )
    if plot_paths:
        print(f"plots: {len(plot_paths)} file(s) in {args.plots_dir}")
    return 0


def _check_writable(path: Path) -> None:
    from robustdc.plots import OutputPathError, check_output_folder

    try:
        check_output_folder(path)
    except OutputPathError as err:
        raise UsageError(str(err)) from err
    if not os.access(path.parent, os.W_OK):
        raise UsageError(
            f"cannot write {path}: folder {path.parent} is not writable; choose another "
            "output path or fix its permissions"
        )
