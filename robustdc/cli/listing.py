"""``robustdc list``: print the operators, models, attacks, datasets or results."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from robustdc.cli.errors import UsageError
from robustdc.ops import functional as dcf

TOPICS = ("operators", "models", "attacks", "datasets", "results")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="print the available operators and more")
    parser.add_argument("topic", choices=TOPICS, help="what to list")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs"),
        help="folder whose results to list (default: ./runs)",
    )
    parser.add_argument(
        "--export",
        type=Path,
        default=None,
        help="with 'results': also write the table to FILE.csv or FILE.parquet",
    )
    parser.set_defaults(run=run)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Format rows as a plain-text table with aligned columns."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def operators_table() -> str:
    rows = [
        [
            info.model_name,
            info.name,
            info.formula,
            "yes" if info.bounded else "no",
            "rho" if info.uses_radius else "-",
        ]
        for info in dcf.MAGNITUDE_TABLE
    ]
    rows.insert(0, ["baseline", "-", "<w, x> (plain nn.Conv2d)", "no", "-"])
    magnitudes = format_table(["model", "magnitude", "h(|x|)", "bounded", "radius"], rows)
    angulars = format_table(["angular", "g(theta)"], list(dcf.ANGULAR_FORMULAS.items()))
    weightings = format_table(["weighting", "response"], list(dcf.WEIGHTING_FORMULAS.items()))
    return f"{magnitudes}\n\n{angulars}\n\n{weightings}"


def models_table() -> str:
    from robustdc.models import list_architectures, list_operators

    rows = [["architectures", ", ".join(list_architectures())]]
    rows.append(["models (operators)", ", ".join(list_operators())])
    return format_table(["kind", "names"], rows)


def attacks_table() -> str:
    from robustdc.attacks import ATTACKS

    rows = [
        [name, info.kind, ", ".join(info.norms), ", ".join(info.libraries)]
        for name, info in ATTACKS.items()
    ]
    return format_table(["attack", "kind", "norms", "libraries"], rows)


def datasets_table() -> str:
    from robustdc.data import DATASETS

    rows = [
        [
            info.name,
            str(info.num_classes),
            f"{info.in_channels}x{info.image_size}x{info.image_size}",
            ", ".join(f"{value:.4f}" for value in info.mean),
        ]
        for info in DATASETS.values()
    ]
    return format_table(["dataset", "classes", "shape", "mean"], rows)


def results_listing(workdir: Path, export: Path | None) -> str:
    from robustdc.cli.evaluate_cmd import results_table
    from robustdc.results import ResultsFileError, ResultsStore

    try:
        store = ResultsStore(workdir)
        frame = store.read()
        if export is not None:
            store.export(export)
    except (ResultsFileError, ValueError, OSError) as err:
        raise UsageError(str(err)) from err
    if frame.empty:
        return f"no results in {store.path}"
    columns = ["dataset", "model", "training"]
    text = []
    for (dataset, model, training), group in frame.groupby(columns, sort=True):
        text.append(f"{dataset} / {model} / {training}")
        text.append(results_table(group.to_dict("records")))
        text.append("")
    text.append(f"{len(frame)} row(s) in {store.path}")
    if export is not None:
        text.append(f"exported to {export}")
    return "\n".join(text)


def run(args: argparse.Namespace) -> int:
    if args.export is not None and args.topic != "results":
        raise UsageError("--export works with 'robustdc list results' only")
    if args.topic == "operators":
        print(operators_table())
    elif args.topic == "models":
        print(models_table())
    elif args.topic == "attacks":
        print(attacks_table())
    elif args.topic == "datasets":
        print(datasets_table())
    else:
        print(results_listing(args.workdir, args.export))
    return 0
