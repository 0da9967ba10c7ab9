"""Options and value parsers shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import torch

from robustdc import distributed
from robustdc.cli.errors import UsageError

DEVICES = ("auto", "cpu", "cuda")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Add --workdir, --device, --seed and --data-dir to a subcommand."""
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs"),
        help="folder for checkpoints and results (default: ./runs)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)",
    )
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset folder (default: $ROBUSTDC_DATA or ~/.cache/robustdc/data)",
    )


def resolve_device(name: str) -> torch.device:
    """Turn auto/cpu/cuda/cuda:N into a device, rejecting CUDA when there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UsageError(f"invalid --device {name!r}; expected one of: auto, cpu, cuda, cuda:N")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(
            f"invalid --device {name!r}; expected one of: auto, cpu, cuda, cuda:N"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available; use --device cpu")
    return device


@contextlib.contextmanager
def torchrun_device(device: torch.device) -> Iterator[torch.device]:
    """Join the torchrun launch of this process, if any, and yield this rank's device.

    See :func:`robustdc.distributed.process_group`. Its errors while joining, such as
    ``--device cuda:1`` under torchrun, become UsageErrors; errors of the body pass.
    """
    stack = contextlib.ExitStack()
    try:
        rank_device = stack.enter_context(distributed.process_group(device))
    except ValueError as err:
        raise UsageError(str(err)) from err
    with stack:
        yield rank_device


def parse_epsilon(text: str) -> float:
    """Parse one perturbation budget written as ``0.03`` or ``8/255``, in [0, 1]."""
    value_text = text.strip()
    try:
        if "/" in value_text:
            numerator, denominator = value_text.split("/", 1)
            value = float(Fraction(numerator.strip()) / Fraction(denominator.strip()))
        else:
            value = float(value_text)
    except (ValueError, ZeroDivisionError) as err:
        raise UsageError(
            f"invalid epsilon {text!r}; write a number in [0, 1] such as 0.03 or 8/255"
        ) from err
    if not math.isfinite(value) or not 0 <= value <= 1:
        hint = f" (did you mean {value_text}/255?)" if 1 < value <= 255 else ""
        raise UsageError(
            f"epsilon {text!r} is outside [0, 1]; epsilons are in pixel units of images "
            f"scaled to [0, 1]{hint}"
        )
    return value


def parse_epsilons(text: str) -> list[float]:
    """Parse a comma-separated list of epsilons such as ``0.1,8/255``."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise UsageError(f"invalid epsilon list {text!r}; write e.g. 0.1,8/255")
    return [parse_epsilon(part) for part in parts]


def check_choice(option: str, value: str, allowed: Iterable[str]) -> str:
    """Return ``value`` if allowed, else raise a UsageError with a did-you-mean hint."""
    allowed = list(allowed)
    if value in allowed:
        return value
    close = difflib.get_close_matches(value, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UsageError(f"unknown {option} {value!r}; expected one of: {', '.join(allowed)}{hint}")


#: Largest seed numpy accepts.
MAX_SEED = 2**32 - 1


def seed_int(text: str) -> int:
    """argparse type for seeds: integers from 0 to ``MAX_SEED``."""
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from err
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"seed {text!r} is outside [0, {MAX_SEED}]; give e.g. --seed 0"
        )
    return value


def positive_int(text: str) -> int:
    """argparse type for integers >= 1."""
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value
