"""Benchmark the evaluation harness against a bare torchattacks loop, and the main command.

Run from the repository root:

    python scripts/bench_eval.py                  # harness ratio and the main command
    python scripts/bench_eval.py --skip-main      # harness ratio only

1. Harness overhead: the same BIM attack (epsilon 0.3, 10 steps) on the same model and
   the same test images, timed as a bare loop over ``torchattacks.BIM`` batches (clean
   predictions, attack, adversarial predictions) and through ``Evaluator.evaluate``
   without sanity checks. Two ratios: the attack alone, and the whole evaluation (the
   harness also loads the checkpoint and the images from disk, checks the invariants
   and writes the row). Runs alternate so that machine noise hits both; each ratio is
   the median over the runs. The time with the sanity checks on is printed too.
2. The main command ``robustdc evaluate --model tanhconv --attack bim`` from an empty
   workdir, as a subprocess, with its wall time and the training and attack times that
   it logs.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torchattacks

from robustdc.attacks import make_spec
from robustdc.data import load_dataset
from robustdc.evaluation import EvaluationRequest, Evaluator
from robustdc.train import default_config, find_or_train


@dataclass
class Settings:
    n_examples: int = 1000
    epsilon: float = 0.3
    steps: int = 10
    repeats: int = 3
    batch_size: int = 256


def bare_bim_seconds(model, images, labels, settings: Settings, step_size: float):
    """Time a plain torchattacks BIM loop; return (attack seconds, total seconds).

    The loop computes what a robust accuracy needs: clean predictions, the attack and
    the predictions on the adversarial images.
    """
    start = time.perf_counter()
    attack_seconds = 0.0
    attack = torchattacks.BIM(model, eps=settings.epsilon, alpha=step_size, steps=settings.steps)
    robust = 0
    for begin in range(0, len(images), settings.batch_size):
        x = images[begin : begin + settings.batch_size]
        y = labels[begin : begin + settings.batch_size]
        with torch.no_grad():
            clean_correct = model(x).argmax(1) == y
        attack_start = time.perf_counter()
        x_adv = attack(x, y)
        attack_seconds += time.perf_counter() - attack_start
        with torch.no_grad():
            robust += int((clean_correct & (model(x_adv).argmax(1) == y)).sum())
    return attack_seconds, time.perf_counter() - start


def harness_seconds(workdir: Path, spec, settings: Settings, sanity: bool):
    """Time ``Evaluator.evaluate``; return (attack seconds as logged, total seconds).

    The total includes loading the checkpoint and the test images from disk, the clean
    predictions, the invariant checks and writing the results row.
    """
    request = EvaluationRequest(
        "tanhconv",
        [spec],
        n_examples=settings.n_examples,
        force=True,
        allow_train=False,
        sanity_checks=sanity,
        batch_size=settings.batch_size,
    )
    start = time.perf_counter()
    report = Evaluator(workdir, progress=False).evaluate(request)
    total = time.perf_counter() - start
    return float(report.rows[0]["seconds"]), total


def measure_harness(settings: Settings, workdir: Path) -> None:
    model, _, _ = find_or_train(default_config("mnist-sample", "tanhconv"), workdir)
    model.eval()
    dataset = load_dataset("mnist-sample", "test", limit=settings.n_examples)
    images = dataset.images.float() / 255
    labels = torch.as_tensor(dataset.labels, dtype=torch.long)
    spec = make_spec("bim", epsilon=settings.epsilon, steps=settings.steps)

    attack_ratios, total_ratios = [], []
    print("| run | bare attack s | harness attack s | bare loop s | harness evaluate s |")
    print("|---|---|---|---|---|")
    for run in range(settings.repeats):
        bare_attack, bare_total = bare_bim_seconds(model, images, labels, settings, spec.step_size)
        harness_attack, harness_total = harness_seconds(workdir, spec, settings, sanity=False)
        attack_ratios.append(harness_attack / bare_attack)
        total_ratios.append(harness_total / bare_total)
        print(
            f"| {run + 1} | {bare_attack:.2f} | {harness_attack:.2f} | {bare_total:.2f} | "
            f"{harness_total:.2f} |"
        )
    _, with_checks = harness_seconds(workdir, spec, settings, sanity=True)
    print()
    print("| measurement | value |")
    print("|---|---|")
    print(
        f"| attack: harness / bare torchattacks BIM (median of {settings.repeats}) | "
        f"{statistics.median(attack_ratios):.3f}x |"
    )
    print(
        f"| whole evaluation: harness / bare loop (median of {settings.repeats}) | "
        f"{statistics.median(total_ratios):.3f}x |"
    )
    print(f"| harness evaluate with sanity checks | {with_checks:.1f} s |")


def measure_main_command() -> None:
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "robustdc", "evaluate", "--model", "tanhconv"]
        command += ["--attack", "bim", "--workdir", str(Path(folder) / "runs")]
        start = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
    log = completed.stderr
    epochs = [float(s) for s in re.findall(r"epoch \d+/\d+: .*?, ([\d.]+) s", log)]
    attacks = re.findall(r"(\S+) on (\d+) images took ([\d.]+) s", log)
    print("| main command part | seconds |")
    print("|---|---|")
    print(f"| wall time, training included | {wall:.1f} |")
    print(f"| training ({len(epochs)} epochs) | {sum(epochs):.1f} |")
    for label, count, seconds in attacks:
        print(f"| {label} on {count} images | {float(seconds):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-main", action="store_true", help="skip the main command")
    parser.add_argument("--workdir", type=Path, default=Path("runs"), help="model cache")
    args = parser.parse_args()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
    measure_harness(Settings(), args.workdir)
    if not args.skip_main:
        measure_main_command()


if __name__ == "__main__":
    main()
