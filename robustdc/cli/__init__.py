"""The ``robustdc`` command line.

Only this package prints for the user and configures logging. Every command exits with
status 0 on success and with status 2 and a one-line ``robustdc: error: ...`` message on
bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from robustdc import __version__
from robustdc.cli import evaluate_cmd, listing, train_cmd
from robustdc.cli.errors import UsageError

logger = logging.getLogger("robustdc")


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with one subcommand per module in this package."""
    parser = argparse.ArgumentParser(
        prog="robustdc",
        description=(
            "Build decoupled networks (Liu et al., CVPR 2018), train them and evaluate "
            "their adversarial robustness."
        ),
    )
    parser.add_argument("--version", action="version", version=f"robustdc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages as well")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (evaluate_cmd, listing, train_cmd):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return args.run(args) or 0
    except UsageError as err:
        parser.exit(2, f"robustdc: error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "robustdc: interrupted\n")
    return 0
