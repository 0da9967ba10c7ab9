"""``robustdc reproduce``: run the robustness protocol of Liu et al. (2018) and report it.

    robustdc reproduce --preset cpu --data-dir ../shared/data

trains baseline, SphereConv, BallConv and TanhConv CNN-9 models naturally and with FGSM,
attacks them with FGSM and BIM (white-box and transfer), DeepFool and AutoAttack, draws
the MNIST 2-d features and writes the HTML report. A rerun reuses finished models and
rows, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

from robustdc.cli.common import add_common_options, check_choice, resolve_device
from robustdc.cli.errors import UsageError
from robustdc.cli.listing import format_table

logger = logging.getLogger("robustdc")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "reproduce",
        help="run the robustness protocol of Liu et al. (2018): FGSM, BIM, DeepFool, AutoAttack",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--preset",
        default="cpu",
        help="cpu (45 minutes on a 2-core CPU) or paper (full CIFAR-10, for a GPU); default: cpu",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="HTML report path; its folder is created (default: reports/reproduce-PRESET.html)",
    )
    add_common_options(parser)
    parser.set_defaults(run=run)


def _cell(value: float, measure: str) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if measure.endswith("%") else f"{value:.3g}"


def run(args: argparse.Namespace) -> int:
    from robustdc.data import DatasetNotFoundError
    from robustdc.evaluation.checks import InvariantError
    from robustdc.plots import OutputPathError
    from robustdc.report import ReportError
    from robustdc.reproduce import PRESETS, protocol_table, run_protocol
    from robustdc.results import ResultsFileError
    from robustdc.train import CheckpointError

    start = time.perf_counter()
    preset = PRESETS[check_choice("--preset", args.preset, PRESETS)]
    preset = preset.replace(seed=args.seed)
    if preset.transfer_seed == preset.seed:
        preset = preset.replace(transfer_seed=preset.seed + 1)
    device = resolve_device(args.device)
    out = args.out or Path("reports") / f"reproduce-{preset.name}.html"
    _check_paths(args.workdir, out, args.data_dir)
    # run_protocol logs the preset's reductions, one line each.
    print(f"preset {preset.name}: {preset.description}")

    try:
        report = run_protocol(
            preset,
            args.workdir,
            device=device,
            data_dir=args.data_dir,
            draw_features=draw_features,
            write_report=functools.partial(
                write_report,
                out=out,
                command_line=shlex.join(["robustdc", *getattr(args, "argv", sys.argv[1:])]),
            ),
        )
    except (
        ValueError,
        CheckpointError,
        DatasetNotFoundError,
        ResultsFileError,
        ReportError,
        OutputPathError,
    ) as err:
        raise UsageError(str(err)) from err
    except InvariantError as err:
        raise UsageError(f"rejected result: {err}") from err

    table = protocol_table(report.results, preset)
    header = ["training", "measure", *preset.operators]
    body = [
        [line["training"], line["measure"]]
        + [_cell(line[name], line["measure"]) for name in preset.operators]
        for line in table.to_dict("records")
    ]
    print(format_table(header, body))
    for row in report.reused + report.rows:
        for warning in json.loads(row.get("warnings") or "[]"):
            print(f"warning: {row['checkpoint']} {row['attack']} {row['kind']}: {warning}")
    print(
        f"{len(report.rows)} new row(s), {len(report.reused)} reused, "
        f"{len(report.trained)} {preset.dataset} model(s) trained"
    )
    for title, seconds in report.stage_seconds.items():
        print(f"  {title}: {seconds:.0f} s")
    for path in report.figures:
        print(f"figure: {path}")
    if report.report_path is not None:
        print(f"report: {report.report_path}")
    print(f"results: {report.results_path}")
    logger.info("reproduce finished in %.1f s", time.perf_counter() - start)
    return 0


def _check_paths(workdir: Path, out: Path, data_dir: Path | None) -> None:
    """Reject a workdir, report path or data folder that cannot work, before any training."""
    if data_dir is not None and not data_dir.is_dir():
        # A missing folder would start a download attempt deep inside the first stage.
        raise UsageError(
            f"--data-dir {data_dir} is not a folder; give the folder with the CIFAR-10 and "
            "MNIST data, or create it to let torchvision download them there"
        )
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(
            f"--workdir {workdir} is a file, not a folder; give a folder, e.g. --workdir runs"
        )
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {out} is not an .html file; give e.g. --out reports/report.html")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give an .html file path inside it")
    for folder in (out.parent, *out.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise UsageError(
                    f"--out {out}: {folder} is a file, not a folder; choose another --out"
                )
            break


def draw_features(*, preset, workdir, device, data_dir, progress):
    """Train or reuse the preset's ``mnist2d`` models and draw their 2-d features."""
    from robustdc.cli import features_cmd
    from robustdc.data import get_info
    from robustdc.plots import plot_features, save_figure
    from robustdc.report import features_image_stem
    from robustdc.train import default_config

    overrides = {**preset.features_overrides, "seed": preset.seed}
    configs = [
        default_config(
            preset.features_dataset,
            operator,
            arch=features_cmd.ARCH,
            training=training,
            **overrides,
        )
        for operator in preset.operators
        for training in preset.trainings
    ]
    options = argparse.Namespace(
        dataset=preset.features_dataset,
        data_dir=data_dir,
        workdir=workdir,
        n_examples=preset.features_examples,
        no_train=False,
        no_download=False,
    )
    panels = features_cmd.feature_panels(options, configs, device)
    title = f"2-d features of {features_cmd.ARCH} models, {preset.features_dataset} test images"
    figure = plot_features(panels, get_info(preset.features_dataset).class_names, title=title)
    stem = features_image_stem(workdir, preset.features_dataset)
    stem.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(figure, stem)


def write_report(*, preset, workdir, out: Path, command_line: str) -> Path:
    """Write the HTML report of the preset's dataset, with the reductions as notes."""
    from robustdc.report import build_report

    notes = [f"preset {preset.name}: {preset.description}"]
    notes += [f"reduced: {line}" for line in preset.reductions()]
    report = build_report(
        workdir,
        datasets=[preset.dataset],
        command_line=command_line,
        notes=notes,
        features_dataset=preset.features_dataset,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    return report.write(out)
