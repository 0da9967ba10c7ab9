"""``robustdc evaluate``: attack a model and store the results.

    robustdc evaluate --model tanhconv --attack bim

trains the model with the dataset's defaults when no checkpoint exists (and logs that;
``--no-train`` makes that an error), runs the attack white-box (plus transfer from
``--transfer-from``), checks every result, prints a table and the results file path.

Under ``torchrun --nproc_per_node=N`` the N processes share the attack batches out
among themselves, and rank 0 gathers the per-sample results, writes the same rows as
one process and prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

from robustdc import distributed
from robustdc.cli.common import (
    add_common_options,
    check_choice,
    parse_epsilons,
    positive_int,
    resolve_device,
    torchrun_device,
)
from robustdc.cli.errors import UsageError
from robustdc.cli.listing import format_table

logger = logging.getLogger("robustdc")

TRAININGS = ("natural", "fgsm", "pgd")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="attack a model (training it first if needed) and store the results",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--model", required=True, help="baseline, tanhconv, sphereconv, ...")
    parser.add_argument(
        "--attack",
        required=True,
        help="an attack name (fgsm, bim, pgd, cw, deepfool, square, autoattack) or 'all'",
    )
    parser.add_argument(
        "--suite",
        default=None,
        help="attack suite: a name in attacks/ (default, paper) or a TOML file; "
        "supplies each attack's settings for the dataset (default: default)",
    )
    parser.add_argument("--dataset", default="mnist-sample", help="default: mnist-sample")
    parser.add_argument("--arch", default=None, help="architecture (default: the dataset's)")
    parser.add_argument("--angular", default="cosine", help="angular function (default: cosine)")
    parser.add_argument(
        "--training", default="natural", help="natural, fgsm or pgd (default: natural)"
    )
    parser.add_argument(
        "--norm", default=None, help="linf or l2 (default: the suite's norm for the attack)"
    )
    parser.add_argument(
        "--epsilon",
        default=None,
        help="comma-separated budgets in [0, 1] pixel units, e.g. 0.1,8/255 (default: the suite's)",
    )
    parser.add_argument(
        "--n-examples",
        type=positive_int,
        default=1000,
        help="number of test examples, the first N of the test split (default: 1000)",
    )
    parser.add_argument(
        "--transfer-from",
        default=None,
        help="also run a black-box transfer attack crafted on this model (e.g. baseline)",
    )
    parser.add_argument(
        "--no-train", action="store_true", help="fail instead of training a missing model"
    )
    parser.add_argument(
        "--force", action="store_true", help="re-run evaluations that the results file has"
    )
    parser.add_argument(
        "--no-sanity-checks",
        action="store_true",
        help="skip the gradient-masking sanity checks (faster, less trustworthy)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=256,
        help="examples per attack batch (default: 256); random starts are seeded per "
        "batch, so it changes the draws of random attacks. Under torchrun the "
        "processes share out whole batches",
    )
    add_common_options(parser)
    parser.set_defaults(run=run)


def _specs(args: argparse.Namespace) -> list:
    from robustdc import attacks as attack_lib
    from robustdc.evaluation import with_epsilons

    suite_name = args.suite or "default"
    try:
        suite = attack_lib.load_suite(suite_name, args.dataset)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    if args.attack == "all":
        specs = list(suite)
    else:
        check_choice("attack", args.attack, [*attack_lib.ATTACKS, "all"])
        specs = [spec for spec in suite if spec.name == args.attack]
        if args.norm is not None:
            specs = [spec for spec in specs if spec.norm == args.norm]
        if not specs:
            specs = [_spec_outside_suite(args, suite_name)]
    if args.norm is not None:
        check_choice("norm", args.norm, ["linf", "l2"])
        specs = [spec for spec in specs if spec.norm == args.norm]
        if not specs:
            raise UsageError(f"no attack in the suite {suite_name!r} uses --norm {args.norm}")
    if args.epsilon is not None:
        try:
            specs = with_epsilons(specs, parse_epsilons(args.epsilon))
        except ValueError as err:
            raise UsageError(str(err)) from err
    # A suite with several epsilons for one attack yields duplicates after --epsilon.
    return list(dict.fromkeys(specs))


def _spec_outside_suite(args: argparse.Namespace, suite_name: str):
    """Build the attack that the suite lacks, at the first ``--epsilon`` value if given.

    ``_specs`` then expands the spec to every ``--epsilon`` value.
    """
    from robustdc import attacks as attack_lib

    epsilon = parse_epsilons(args.epsilon)[0] if args.epsilon is not None else None
    if epsilon is not None or attack_lib.ATTACKS[args.attack].kind != "bounded":
        try:
            return attack_lib.make_spec(args.attack, norm=args.norm, epsilon=epsilon)
        except ValueError as err:
            raise UsageError(str(err)) from err
    having = []
    for name in attack_lib.list_suites():
        try:
            suite = attack_lib.load_suite(name, args.dataset)
        except (ValueError, FileNotFoundError):
            continue
        if any(spec.name == args.attack for spec in suite):
            having.append(name)
    hint = f" or --suite {' / '.join(having)}" if having else ""
    raise UsageError(
        f"{args.attack} is not in the attack suite {suite_name!r} for {args.dataset} and "
        f"needs an epsilon; give --epsilon, e.g. --epsilon 8/255{hint}"
    )


def _format_percent(value: float) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{100 * value:.1f}%"
    )


def _format_number(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def results_table(rows: list[dict]) -> str:
    """Format result rows as the compact table that ``evaluate`` prints."""
    header = [
        "attack",
        "norm",
        "epsilon",
        "kind",
        "clean",
        "robust",
        "success",
        "median L2",
        "median Linf",
        "time",
        "warnings",
    ]
    body = []
    for row in rows:
        warnings = json.loads(row.get("warnings") or "[]")
        body.append(
            [
                row["attack"],
                row["norm"],
                _format_number(row["epsilon"], 4),
                row["kind"] if row["kind"] != "transfer" else f"transfer<-{row['source']}",
                _format_percent(row["clean_accuracy"]),
                _format_percent(row["robust_accuracy"]),
                _format_percent(row["attack_success_rate"]),
                _format_number(row.get("l2_median")),
                _format_number(row.get("linf_median")),
                f"{row['seconds']:.1f}s",
                str(len(warnings)) if warnings else "-",
            ]
        )
    return format_table(header, body)


def run(args: argparse.Namespace) -> int:
    from robustdc.data import DatasetNotFoundError
    from robustdc.evaluation import EvaluationRequest, Evaluator
    from robustdc.evaluation.checks import InvariantError
    from robustdc.models import list_operators
    from robustdc.results import ResultsFileError
    from robustdc.train import CheckpointError

    start = time.perf_counter()
    operators = list_operators()
    check_choice("model", args.model, operators)
    if args.transfer_from is not None:
        check_choice("--transfer-from model", args.transfer_from, operators)
    check_choice("training", args.training, TRAININGS)
    device = resolve_device(args.device)
    specs = _specs(args)

    request = EvaluationRequest(
        model=args.model,
        attacks=specs,
        dataset=args.dataset,
        arch=args.arch,
        angular=args.angular,
        training=args.training,
        n_examples=args.n_examples,
        transfer_from=args.transfer_from,
        seed=args.seed,
        force=args.force,
        allow_train=not args.no_train,
        sanity_checks=not args.no_sanity_checks,
        batch_size=args.batch_size,
    )
    try:
        with torchrun_device(device) as rank_device:
            evaluator = Evaluator(args.workdir, device=rank_device, data_dir=args.data_dir)
            # Reject a results file that is not ours before any training starts.
            evaluator.store.read()
            report = evaluator.evaluate(request)
            if not distributed.is_main_process():
                return 0
    except (ValueError, CheckpointError, DatasetNotFoundError, ResultsFileError) as err:
        raise UsageError(str(err)) from err
    except InvariantError as err:
        raise UsageError(f"rejected result: {err}") from err

    rows = report.reused + report.rows
    print(results_table(rows))
    for row in rows:
        for warning in json.loads(row.get("warnings") or "[]"):
            print(f"warning: {row['attack']} {row['kind']}: {warning}")
    if report.reused:
        print(f"{len(report.reused)} row(s) reused from the results file (--force re-runs them)")
    print(f"results: {Path(report.results_path)}")
    logger.info("evaluate finished in %.1f s", time.perf_counter() - start)
    return 0
