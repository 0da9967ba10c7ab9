"""The ``robustdc`` command line.

Only this package prints for the user and configures logging. Every command exits with
status 0 on success and with status 2 and a one-line ``robustdc: error: ...`` message on
bad input.

Under torchrun (``WORLD_SIZE > 1``) rank 0 logs and prints, the other ranks log errors
only (everything with ``--verbose``), and every log line and error names its rank. An
error that all ranks raise together, such as another rank's failure, is printed once, by
rank 0. Any other exception becomes a one-line error with exit status 1, and
``--verbose`` shows its traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch.distributed

from robustdc import __version__, distributed
from robustdc.cli import (
    evaluate_cmd,
    features_cmd,
    listing,
    report_cmd,
    reproduce_cmd,
    train_cmd,
)
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
    for module in (evaluate_cmd, features_cmd, listing, report_cmd, reproduce_cmd, train_cmd):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # The arguments as given, for commands that record their own command line.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        launch = distributed.launch_environment()
    except ValueError as err:
        parser.exit(2, f"robustdc: error: {err}\n")
    _configure_logging(args.verbose, launch)
    error_prefix = "robustdc: error"
    if launch is not None:
        error_prefix += f" (rank {launch.rank} of {launch.world_size})"
    try:
        return args.run(args) or 0
    except UsageError as err:
        parser.exit(2, f"{error_prefix}: {err}\n")
    except distributed.DistributedRunError as err:
        # Every rank raised it at the same collective: rank 0 speaks for all of them.
        if launch is None or launch.rank == 0:
            parser.exit(1, f"robustdc: error: {_one_line(err)}\n")
        parser.exit(1)
    except KeyboardInterrupt:
        parser.exit(130, "robustdc: interrupted\n")
    except Exception as err:
        if launch is None or args.verbose:
            raise
        hint = ""
        if isinstance(err, getattr(torch.distributed, "DistError", ())):
            hint = " (a collective failed; if another rank failed first, see its error)"
        parser.exit(1, f"{error_prefix}: {type(err).__name__}: {_one_line(err)}{hint}\n")
    return 0


def _configure_logging(verbose: bool, launch: distributed.LaunchEnvironment | None) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    message_format = "%(message)s"
    if launch is not None:
        message_format = f"[rank {launch.rank}] %(message)s"
        if launch.rank != 0 and not verbose:
            level = logging.ERROR
    logging.basicConfig(level=level, format=message_format, stream=sys.stderr)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
