"""``robustdc list``: print the operators, models, attacks, datasets or results."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from robustdc.ops import functional as dcf

TOPICS = ("operators",)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="print the available operators and more")
    parser.add_argument("topic", choices=TOPICS, help="what to list")
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


def run(args: argparse.Namespace) -> int:
    if args.topic == "operators":
        print(operators_table())
    return 0
