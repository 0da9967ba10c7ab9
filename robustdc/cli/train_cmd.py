"""``robustdc train``: train one model, or resume or reuse its checkpoint.

Options that are not given keep the defaults of the dataset (see
:func:`robustdc.train.default_config`). The checkpoint goes to
``<workdir>/models/<dataset>/<name>/``.

Under ``torchrun --nproc_per_node=N`` the command trains data-parallel over the N
processes (see :mod:`robustdc.train.parallel`); ``--batch-size`` stays the batch of one
step over all processes, and rank 0 writes the checkpoint and prints.
"""

from __future__ import annotations

import argparse
from typing import Any

from robustdc import distributed
from robustdc.cli.common import (
    add_common_options,
    check_choice,
    parse_epsilon,
    positive_int,
    resolve_device,
    torchrun_device,
)
from robustdc.cli.errors import UsageError
from robustdc.data import DATASETS, DEFAULT_DATASET, DatasetFormatError, DatasetNotFoundError
from robustdc.models import list_architectures, list_operators
from robustdc.ops import ANGULARS
from robustdc.train import (
    OPTIMIZERS,
    CheckpointError,
    default_config,
    train,
)

ADVERSARIAL_CHOICES = ("fgsm", "pgd")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model, resuming or reusing its checkpoint",
        description=(
            "Train a model and save it under WORKDIR/models/DATASET/NAME/. An interrupted "
            "run resumes from its last finished epoch, and a finished one is reused. "
            "Options that are not given take the defaults of the dataset."
        ),
    )
    parser.add_argument(
        "--model",
        required=True,
        help=f"operator: {', '.join(list_operators())}",
    )
    parser.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help=f"{', '.join(DATASETS)} (default: {DEFAULT_DATASET})",
    )
    parser.add_argument(
        "--arch",
        default=None,
        help=f"architecture: {', '.join(list_architectures())} (default: cnn9)",
    )
    parser.add_argument(
        "--angular",
        default="cosine",
        help=f"angular function of decoupled operators: {', '.join(ANGULARS)} (default: cosine)",
    )
    parser.add_argument(
        "--adversarial",
        default=None,
        metavar="{fgsm,pgd}",
        help="adversarial training: fgsm (half of each batch FGSM examples) or pgd "
        "(every example a PGD example); natural training without it",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="number of epochs; more epochs than a checkpoint has continue its training",
    )
    parser.add_argument(
        "--epsilon",
        default=None,
        help="L-infinity budget of adversarial training in [0, 1] pixel units, e.g. 0.3 or 8/255",
    )
    parser.add_argument("--pgd-steps", type=positive_int, default=None, help="PGD steps per batch")
    parser.add_argument(
        "--pgd-step-size",
        default=None,
        help="PGD step size in [0, 1] pixel units, e.g. 0.01 or 2/255",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="examples per optimizer step, summed over all processes under torchrun",
    )
    parser.add_argument("--lr", type=float, default=None, help="initial learning rate")
    parser.add_argument(
        "--lr-milestones",
        default=None,
        help="comma-separated epochs after which the learning rate is divided by 10, or "
        "'none' to divide it when the training loss stops falling",
    )
    parser.add_argument(
        "--optimizer", default=None, help=f"{', '.join(OPTIMIZERS)} (SGD with momentum 0.9)"
    )
    parser.add_argument(
        "--width", type=float, default=None, help="channel multiplier of the architecture"
    )
    parser.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="BatchNorm after each conv",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="train on the first N training images only",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading a missing dataset",
    )
    parser.add_argument(
        "--sync-batch-norm",
        action="store_true",
        help="under torchrun on GPUs, normalize with the batch statistics of all "
        "processes (nn.SyncBatchNorm) instead of each process's own",
    )
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    dataset = check_choice("dataset", args.dataset, DATASETS)
    model = check_choice("model", args.model, list_operators())
    arch = None if args.arch is None else check_choice("arch", args.arch, list_architectures())
    angular = check_choice("angular function", args.angular, ANGULARS)
    training = "natural"
    if args.adversarial is not None:
        training = check_choice("--adversarial", args.adversarial, ADVERSARIAL_CHOICES)
    overrides = _overrides(args, training)
    device = resolve_device(args.device)

    try:
        config = default_config(
            dataset, model, angular=angular, arch=arch, training=training, **overrides
        )
        with torchrun_device(device) as rank_device:
            result = train(
                config,
                args.workdir,
                device=rank_device,
                data_dir=args.data_dir,
                download=not args.no_download,
                sync_batch_norm=args.sync_batch_norm,
            )
            if not distributed.is_main_process():
                return 0
    except (ValueError, CheckpointError, DatasetNotFoundError, DatasetFormatError) as err:
        raise UsageError(" ".join(str(err).split())) from err

    if result.epochs_trained == 0:
        print(f"reused the finished checkpoint ({result.config.epochs} epochs)")
    test_accuracy = float(result.metrics["test_accuracy"].iloc[-1])
    print(f"checkpoint: {result.checkpoint_dir}")
    epochs = result.config.epochs
    unit = "epoch" if epochs == 1 else "epochs"
    print(f"test accuracy: {100 * test_accuracy:.2f}% after {epochs} {unit}")
    return 0


def _overrides(args: argparse.Namespace, training: str) -> dict[str, Any]:
    """Collect the TrainConfig fields given on the command line."""
    adversarial_only = {"--epsilon": args.epsilon}
    pgd_only = {"--pgd-steps": args.pgd_steps, "--pgd-step-size": args.pgd_step_size}
    for option, value in adversarial_only.items():
        if value is not None and training == "natural":
            raise UsageError(
                f"{option} applies to adversarial training; add --adversarial fgsm|pgd"
            )
    for option, value in pgd_only.items():
        if value is not None and training != "pgd":
            raise UsageError(f"{option} applies to PGD training only; add --adversarial pgd")

    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.epsilon is not None:
        overrides["epsilon"] = _positive_epsilon("--epsilon", args.epsilon)
    if args.pgd_steps is not None:
        overrides["pgd_steps"] = args.pgd_steps
    if args.pgd_step_size is not None:
        overrides["pgd_step_size"] = _positive_epsilon("--pgd-step-size", args.pgd_step_size)
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.lr is not None:
        overrides["lr"] = args.lr
    if args.lr_milestones is not None:
        overrides["lr_milestones"] = _parse_milestones(args.lr_milestones)
    if args.optimizer is not None:
        overrides["optimizer"] = check_choice("optimizer", args.optimizer, OPTIMIZERS)
    if args.width is not None:
        overrides["width"] = args.width
    if args.batch_norm is not None:
        overrides["batch_norm"] = args.batch_norm
    if args.limit is not None:
        overrides["train_limit"] = args.limit
    overrides["seed"] = args.seed
    return overrides


def _positive_epsilon(option: str, text: str) -> float:
    value = parse_epsilon(text)
    if value == 0:
        raise UsageError(f"{option} {text!r} must be > 0; write a number in (0, 1] such as 8/255")
    return value


def _parse_milestones(text: str) -> tuple[int, ...]:
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise UsageError(
            f"invalid --lr-milestones {text!r}; write epochs such as 6,8 or 'none'"
        ) from err
