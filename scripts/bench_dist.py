"""Benchmark sharded evaluation: one ``robustdc evaluate`` with 1 and with N processes.

Run from the repository root:

    python scripts/bench_dist.py                                # CPU: 1 and 2 processes
    python scripts/bench_dist.py --device cuda --nproc 1,2,4,8 \
        --dataset mnist --n-examples 10000 --batch-size 500     # one process per GPU

Every configuration runs the same command on the same trained checkpoint:

    robustdc evaluate --model MODEL --attack bim --epsilon 0.3 --n-examples N \
        --batch-size B --no-sanity-checks --force --no-train

With more than one process it runs under ``python -m torch.distributed.run
--nproc_per_node=P`` on 127.0.0.1. On the CPU the reference is one process with one
torch thread (``OMP_NUM_THREADS=1``), and one process with torch's default thread count
is measured as well, because that is what a user runs without torchrun. With P processes
every process has one thread. On CUDA every process has its own GPU, and the reference is
one process. The configurations take turns, ``--repeats`` times, so that load from other
jobs spreads over all of them; each cell is the median.

Two times per run. The attack time is the ``seconds`` column of the results row, which
under torchrun is the slowest rank's attack. The command time is the wall time of the
whole command: Python start-up, imports, loading the model and data, clean predictions
and writing the row included. Throughput is examples per second of attack time. At the
end the script checks that every configuration wrote the same row apart from its time
columns.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from robustdc.results import ResultsStore


@dataclass
class Settings:
    dataset: str = "mnist-sample"
    model: str = "tanhconv"
    device: str = "cpu"
    n_examples: int = 1000
    batch_size: int = 125
    epsilon: str = "0.3"
    nproc: tuple[int, ...] = (1, 2)
    repeats: int = 3
    workdir: Path | None = None


@dataclass
class Configuration:
    """One way to run the evaluation: processes and torch threads per process."""

    name: str
    processes: int
    threads: int | None  # None: torch's default
    attack_seconds: list[float] = field(default_factory=list)
    command_seconds: list[float] = field(default_factory=list)
    row: dict | None = None


def configurations(settings: Settings) -> list[Configuration]:
    if settings.device == "cuda":
        return [
            Configuration(f"{count} process(es), 1 GPU each", count, None)
            for count in settings.nproc
        ]
    result = [Configuration("1 process x 1 thread", 1, 1)]
    result.append(Configuration(f"1 process x {torch.get_num_threads()} threads", 1, None))
    result += [
        Configuration(f"{count} processes x 1 thread", count, 1)
        for count in settings.nproc
        if count > 1
    ]
    return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def evaluate_command(settings: Settings, workdir: Path, processes: int) -> list[str]:
    arguments = ["evaluate", "--model", settings.model, "--dataset", settings.dataset]
    arguments += ["--attack", "bim", "--epsilon", settings.epsilon]
    arguments += ["--n-examples", str(settings.n_examples)]
    arguments += ["--batch-size", str(settings.batch_size), "--device", settings.device]
    arguments += ["--no-sanity-checks", "--force", "--no-train", "--workdir", str(workdir)]
    if processes == 1:
        return [sys.executable, "-m", "robustdc", *arguments]
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
    launcher += ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    return [*launcher, "-m", "robustdc", *arguments]


def run_once(settings: Settings, workdir: Path, configuration: Configuration) -> None:
    environment = dict(os.environ)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    environment.pop("OMP_NUM_THREADS", None)
    if configuration.threads is not None:
        environment["OMP_NUM_THREADS"] = str(configuration.threads)

    command = evaluate_command(settings, workdir, configuration.processes)
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"{configuration.name} failed:\n{completed.stderr}")

    row = ResultsStore(workdir).read().iloc[-1].to_dict()
    configuration.attack_seconds.append(float(row["seconds"]))
    configuration.command_seconds.append(wall)
    if configuration.row is None:
        configuration.row = row


def train_model(settings: Settings, workdir: Path) -> None:
    command = [sys.executable, "-m", "robustdc", "train", "--model", settings.model]
    command += ["--dataset", settings.dataset, "--device", settings.device]
    command += ["--workdir", str(workdir)]
    subprocess.run(command, check=True, capture_output=True, text=True)


def same_rows(rows: list[dict]) -> bool:
    """Return whether the rows are equal apart from their time columns."""

    def comparable(row: dict) -> dict:
        return {
            key: ("missing" if pd.isna(value) else value)
            for key, value in row.items()
            if key not in ("seconds", "created")
        }

    first = comparable(rows[0])
    return all(comparable(row) == first for row in rows[1:])


def report(settings: Settings, runs: list[Configuration]) -> None:
    reference = runs[0]
    reference_attack = statistics.median(reference.attack_seconds)
    reference_command = statistics.median(reference.command_seconds)
    print(
        "| configuration | attack s | examples/s | attack speed-up | command s | command speed-up |"
    )
    print("|---|---|---|---|---|---|")
    for configuration in runs:
        attack = statistics.median(configuration.attack_seconds)
        command = statistics.median(configuration.command_seconds)
        print(
            f"| {configuration.name} | {attack:.2f} | {settings.n_examples / attack:.0f} | "
            f"{reference_attack / attack:.2f}x | {command:.1f} | "
            f"{reference_command / command:.2f}x |"
        )
    rows = [configuration.row for configuration in runs if configuration.row is not None]
    print()
    print(f"rows equal apart from time columns: {'yes' if same_rows(rows) else 'NO'}")


def parse_settings() -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=defaults.dataset)
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--device", default=defaults.device, choices=("cpu", "cuda"))
    parser.add_argument("--n-examples", type=int, default=defaults.n_examples)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--epsilon", default=defaults.epsilon)
    parser.add_argument(
        "--nproc", default=",".join(map(str, defaults.nproc)), help="process counts, e.g. 1,2"
    )
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="reuse this workdir (default: a temporary one)"
    )
    args = parser.parse_args()
    return Settings(
        dataset=args.dataset,
        model=args.model,
        device=args.device,
        n_examples=args.n_examples,
        batch_size=args.batch_size,
        epsilon=args.epsilon,
        nproc=tuple(int(part) for part in args.nproc.split(",")),
        repeats=args.repeats,
        workdir=args.workdir,
    )


def main() -> None:
    settings = parse_settings()
    load = os.getloadavg()
    print(
        f"# torch {torch.__version__}, device {settings.device}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start"
    )
    with tempfile.TemporaryDirectory() as scratch:
        workdir = settings.workdir or Path(scratch) / "runs"
        train_model(settings, workdir)
        runs = configurations(settings)
        for _ in range(settings.repeats):
            for configuration in runs:
                run_once(settings, workdir, configuration)
    report(settings, runs)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")


if __name__ == "__main__":
    main()
