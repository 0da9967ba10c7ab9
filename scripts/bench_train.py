"""Benchmark training: epoch time of TanhConv CNN-9 over baseline CNN-9, and full MNIST.

Run from the repository root:

    python scripts/bench_train.py                       # epoch-time ratios, eager and compiled
    python scripts/bench_train.py --full-mnist          # also train TanhConv on full MNIST
    python scripts/bench_train.py --modes eager --images 512 --repeats 2
    python scripts/bench_train.py --skip-epochs --sample-seeds 0,1,2   # mnist-sample default

Epoch time. Both models train on the same CIFAR-10 subset (the first ``images`` training
images from ``--data-dir``, default ``../shared/data``) with the same batch order:
CNN-9 at width 1 without BatchNorm, as in the adversarial experiments of Liu et al.
(2018), Adam, batch 128, no augmentation. Each mode ("eager", "compile" with
``torch.compile`` on both models) first runs ``warmup`` untimed epochs per model, which
for "compile" includes the compilation, then ``repeats`` timed epochs alternating between
the two models, so that load from other processes hits both alike. The table gives the
median epoch time of each model and their ratio.

mnist-sample. ``--sample-seeds`` trains the default model of ``robustdc train --model
tanhconv`` (``default_config("mnist-sample", "tanhconv")``) once per seed and reports the
test accuracy after each epoch and the wall time of ``train``.

Full MNIST. ``--full-mnist`` trains the TanhConv model of ``robustdc.train.default_config
("mnist", "tanhconv")``, with the overrides in :class:`MnistSettings` if any, on the 60,000
training images and reports the test accuracy on the 10,000 test images after each
epoch, and the wall time including the per-epoch test evaluation.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustdc.data import load_dataset
from robustdc.train import build_model_from_config, default_config, train

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class EpochSettings:
    images: int = 2000
    batch_size: int = 128
    width: float = 1.0
    batch_norm: bool = False
    models: tuple[str, str] = ("baseline", "tanhconv")
    modes: list[str] = field(default_factory=lambda: ["eager", "compile"])
    warmup: int = 1
    repeats: int = 3
    seed: int = 0


@dataclass
class MnistSettings:
    # Fields of default_config("mnist", "tanhconv") to override; empty keeps the defaults.
    overrides: dict[str, object] = field(default_factory=dict)
    seed: int = 0


def time_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
) -> float:
    """Train ``model`` for one epoch over ``images`` in order; return the seconds."""
    model.train()
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        loss = F.cross_entropy(model(x), labels[start : start + batch_size])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def bench_epochs(settings: EpochSettings, data_dir: Path) -> list[list[str]]:
    """Time training epochs of the two models in each mode; return table rows."""
    dataset = load_dataset(
        "cifar10", "train", data_dir=data_dir, download=False, limit=settings.images
    )
    images = dataset.images.float().div_(255.0)  # (N, 3, 32, 32) in [0, 1]
    labels = dataset.labels
    rows = []
    for mode in settings.modes:
        runs = {}
        for name in settings.models:
            torch.manual_seed(settings.seed)
            config = default_config(
                "cifar10", name, width=settings.width, batch_norm=settings.batch_norm
            )
            model = build_model_from_config(config)
            optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
            runner = torch.compile(model) if mode == "compile" else model
            runs[name] = (runner, optimizer, [])

        for _ in range(settings.warmup):
            for runner, optimizer, _times in runs.values():
                time_epoch(runner, optimizer, images, labels, settings.batch_size)
        for _ in range(settings.repeats):
            for runner, optimizer, times in runs.values():
                times.append(time_epoch(runner, optimizer, images, labels, settings.batch_size))

        baseline_name, operator_name = settings.models
        baseline = statistics.median(runs[baseline_name][2])
        operator = statistics.median(runs[operator_name][2])
        rows.append(
            [
                mode,
                f"{baseline:.1f}",
                f"{operator:.1f}",
                f"{operator / baseline:.2f}",
                ", ".join(f"{seconds:.1f}" for seconds in runs[operator_name][2]),
            ]
        )
    return rows


def bench_full_mnist(settings: MnistSettings, data_dir: Path) -> list[list[str]]:
    """Train TanhConv CNN-9 on full MNIST; return one table row per epoch."""
    config = default_config("mnist", "tanhconv", seed=settings.seed, **settings.overrides)
    print(
        f"\nFull MNIST, TanhConv CNN-9 width {config.width:g}, BatchNorm {config.batch_norm}, "
        f"{config.optimizer} lr {config.lr:g}, batch {config.batch_size}, lr / 10 after epochs "
        f"{list(config.lr_milestones)} of {config.epochs}, seed {config.seed}\n"
    )
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        result = train(config, workdir, data_dir=data_dir, download=False, progress=False)
        total = time.perf_counter() - started
    rows = []
    elapsed = 0.0
    for row in result.metrics.itertuples():
        elapsed += row.seconds
        rows.append([str(row.epoch), f"{100 * row.test_accuracy:.2f}", f"{elapsed:.0f}"])
    rows.append(["total", f"{100 * result.metrics['test_accuracy'].iloc[-1]:.2f}", f"{total:.0f}"])
    return rows


def bench_sample_default(seeds: list[int]) -> list[list[str]]:
    """Train the default mnist-sample TanhConv model once per seed; return table rows."""
    rows = []
    for seed in seeds:
        config = default_config("mnist-sample", "tanhconv", seed=seed)
        with tempfile.TemporaryDirectory() as workdir:
            started = time.perf_counter()
            result = train(config, workdir, progress=False)
            total = time.perf_counter() - started
        accuracies = ", ".join(f"{100 * value:.2f}" for value in result.metrics["test_accuracy"])
        rows.append([str(seed), accuracies, f"{total:.1f}"])
    return rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Format rows as a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    epoch_settings = EpochSettings()
    mnist_settings = MnistSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--images", type=int, default=epoch_settings.images)
    parser.add_argument("--repeats", type=int, default=epoch_settings.repeats)
    parser.add_argument("--modes", default=",".join(epoch_settings.modes))
    parser.add_argument("--skip-epochs", action="store_true", help="skip the epoch timing")
    parser.add_argument("--full-mnist", action="store_true", help="train on full MNIST too")
    parser.add_argument(
        "--sample-seeds",
        default="",
        help="comma-separated seeds: train the default mnist-sample TanhConv model with each",
    )
    args = parser.parse_args()
    epoch_settings.images = args.images
    epoch_settings.repeats = args.repeats
    epoch_settings.modes = [mode for mode in args.modes.split(",") if mode]
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.machine()} {platform.processor() or platform.platform()}"
    )
    if not args.skip_epochs:
        print(
            f"\nCIFAR-10, {epoch_settings.images} images, batch {epoch_settings.batch_size}, "
            f"CNN-9 width {epoch_settings.width:g}, BatchNorm {epoch_settings.batch_norm}, "
            f"median of {epoch_settings.repeats} epochs after {epoch_settings.warmup} warm-up\n"
        )
        header = ["mode", "baseline s/epoch", "tanhconv s/epoch", "ratio", "tanhconv epochs (s)"]
        print(format_table(header, bench_epochs(epoch_settings, args.data_dir)))
    seeds = [int(seed) for seed in args.sample_seeds.split(",") if seed.strip()]
    if seeds:
        print("\nDefault mnist-sample TanhConv model (robustdc train --model tanhconv)\n")
        header = ["seed", "test accuracy % per epoch", "wall s"]
        print(format_table(header, bench_sample_default(seeds)))
    if args.full_mnist:
        header = ["epoch", "test accuracy %", "elapsed s"]
        print(format_table(header, bench_full_mnist(mnist_settings, args.data_dir)))


if __name__ == "__main__":
    main()
