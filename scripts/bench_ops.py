"""Benchmark DecoupledConv2d against nn.Conv2d: forward+backward time and memory ratios.

Run from the repository root:

    python scripts/bench_ops.py                 # eager and torch.compile, all shapes
    python scripts/bench_ops.py --modes eager --repeats 5

For batch 128 and the CNN-9 layer shapes plus the MNIST shape 32->32@28 it times one
forward and backward pass of each operator and of nn.Conv2d on the same input, in the
same run. Runs are interleaved (baseline, operator, baseline, ...) so that load from other
processes hits both sides alike; each ratio is the median over repeats of
operator time / baseline time. Memory is the activation memory of one forward pass:
the bytes of the distinct tensors saved for backward plus the output, counted with
``torch.autograd.graph.saved_tensors_hooks``, which is what sets the training peak of a
layer.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from robustdc.ops import DecoupledConv2d


@dataclass
class Settings:
    batch: int = 128
    shapes: list[tuple[int, int, int]] = field(
        default_factory=lambda: [
            (3, 64, 32),
            (64, 64, 32),
            (64, 128, 16),
            (128, 128, 16),
            (128, 256, 8),
            (256, 256, 8),
            (32, 32, 28),
        ]
    )
    operators: list[tuple[str, str]] = field(
        default_factory=lambda: [("tanh", "cosine"), ("sphere", "cosine"), ("linear", "sqcosine")]
    )
    repeats: int = 7
    warmup: int = 2


def activation_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Return the bytes of the distinct tensors saved for backward plus the output."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = layer(x)
    storages.pop(x.untyped_storage().data_ptr(), None)  # the input exists anyway
    storages[output.untyped_storage().data_ptr()] = output.untyped_storage().nbytes()
    return sum(storages.values())


def step_seconds(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> float:
    start = time.perf_counter()
    layer(x).backward(grad)
    return time.perf_counter() - start


def measure_shape(
    settings: Settings, in_channels: int, out_channels: int, size: int, mode: str
) -> dict[str, tuple[float, float]]:
    """Return {operator label: (time ratio, memory ratio)} for one shape and mode."""
    torch.manual_seed(0)
    x = torch.randn(settings.batch, in_channels, size, size, requires_grad=True)
    grad = torch.randn(settings.batch, out_channels, size, size)
    baseline = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    operators = {
        f"{magnitude}/{angular}": DecoupledConv2d(
            in_channels, out_channels, 3, padding=1, magnitude=magnitude, angular=angular
        )
        for magnitude, angular in settings.operators
    }
    baseline_memory = activation_bytes(baseline, x)
    memory = {
        label: activation_bytes(layer, x) / baseline_memory for label, layer in operators.items()
    }
    if mode == "compile":
        # Every layer instance compiles its own graph; reset so earlier shapes do not
        # use up dynamo's recompilation limit and silently fall back to eager.
        torch._dynamo.reset()
        baseline = torch.compile(baseline)
        operators = {label: torch.compile(layer) for label, layer in operators.items()}

    ratios: dict[str, list[float]] = {label: [] for label in operators}
    for _ in range(settings.warmup):
        step_seconds(baseline, x, grad)
        for layer in operators.values():
            step_seconds(layer, x, grad)
    for _ in range(settings.repeats):
        for label, layer in operators.items():
            reference = step_seconds(baseline, x, grad)
            ratios[label].append(step_seconds(layer, x, grad) / reference)
    return {label: (statistics.median(values), memory[label]) for label, values in ratios.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="eager,compile", help="comma-separated: eager, compile")
    parser.add_argument("--repeats", type=int, default=Settings.repeats)
    args = parser.parse_args()
    settings = Settings(repeats=args.repeats)
    modes = args.modes.split(",")

    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, batch {settings.batch}, "
        f"median of {settings.repeats} interleaved repeats"
    )
    labels = [f"{m}/{a}" for m, a in settings.operators]
    header = ["shape"] + [f"{mode} {label}" for mode in modes for label in labels]
    header += [f"memory {label}" for label in labels]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for in_channels, out_channels, size in settings.shapes:
        row = [f"{in_channels}->{out_channels}@{size}"]
        memory: dict[str, float] = {}
        for mode in modes:
            results = measure_shape(settings, in_channels, out_channels, size, mode)
            row += [f"{results[label][0]:.2f}x" for label in labels]
            memory = {label: results[label][1] for label in labels}
        row += [f"{memory[label]:.2f}x" for label in labels]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
