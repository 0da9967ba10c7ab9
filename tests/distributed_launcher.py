"""Test-only entry point for the torchrun tests of tests/test_distributed.py.

    python -m torch.distributed.run --nproc_per_node=2 tests/distributed_launcher.py \
        cli evaluate --model tanhconv --attack fgsm ...
    python tests/distributed_launcher.py gradients OUT.pt
    python -m torch.distributed.run --nproc_per_node=2 tests/distributed_launcher.py \
        collectives OUT.json

``cli ARGS`` runs ``robustdc ARGS`` after installing the test hooks that these
environment variables ask for; nothing outside this file reads them:

- ``ROBUSTDC_TEST_TRAIN_OVERRIDES=JSON``: ``evaluate`` trains and looks up models with
  these TrainConfig fields (``EvaluationRequest.train_overrides``), so that the tests can
  use small models.
- ``ROBUSTDC_TEST_OUTCOMES=PATH``: rank 0 saves the gathered per-sample attack results
  of every attack to PATH (a list of dicts of tensors, in the order of the attacks).
- ``ROBUSTDC_TEST_FAIL_RANK=R`` with ``ROBUSTDC_TEST_FAIL_STAGE=attack``: on rank R every
  attack returns examples outside the [0, 1] bounds, which the harness rejects.
- ``ROBUSTDC_TEST_FAIL_RANK=R`` with ``ROBUSTDC_TEST_FAIL_STAGE=train``: rank R raises
  in its first training step.

``gradients OUT`` builds a small decoupled model without BatchNorm, computes one
gradient of the cross-entropy of a fixed batch, and saves the gradients and running
patch norms to OUT. Without torchrun it uses the whole batch; under torchrun each rank
takes its contiguous slice of the batch and trains through DistributedDataParallel as
:mod:`robustdc.train.parallel` sets it up.

``collectives OUT`` (under torchrun) makes the ranks disagree on purpose and saves, per
rank, the error messages of the helpers of :mod:`robustdc.distributed` to OUT.RANK.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import robustdc.attacks
import robustdc.evaluation
import robustdc.evaluation.harness as harness
import robustdc.train.loop as loop
from robustdc import distributed
from robustdc.cli import main
from robustdc.models import build_model
from robustdc.ops import decoupled_layers
from robustdc.train import parallel

GRADIENT_BATCH = 16


def install_outcome_recorder(path: Path) -> None:
    """Make rank 0 save every gathered per-sample attack result to ``path``."""
    records: list[dict[str, object]] = []
    original = harness.Evaluator._attack_examples

    def recording(self, attacked, target, images, labels, spec, seed):
        result = original(self, attacked, target, images, labels, spec, seed)
        records.append(
            {
                "label": spec.label,
                "adversarial_correct": result.adversarial_correct,
                "l2": result.l2,
                "linf": result.linf,
            }
        )
        if distributed.is_main_process():
            torch.save(records, path)
        return result

    harness.Evaluator._attack_examples = recording


def install_attack_failure(failing_rank: int) -> None:
    """Make every attack on ``failing_rank`` return examples outside the bounds."""
    original = robustdc.attacks.run_attack

    def failing(model, images, labels, spec, **kwargs):
        output = original(model, images, labels, spec, **kwargs)
        if distributed.rank() == failing_rank:
            output.x_adv = output.x_adv + 2.0
        return output

    robustdc.attacks.run_attack = failing


def install_training_failure(failing_rank: int) -> None:
    """Make ``failing_rank`` raise in its first training step."""
    original = loop._TrainingRun._training_inputs

    def failing(self, x, labels):
        if distributed.rank() == failing_rank:
            raise RuntimeError(f"injected training failure on rank {failing_rank}")
        return original(self, x, labels)

    loop._TrainingRun._training_inputs = failing


def install_train_overrides(overrides: dict[str, object]) -> None:
    """Make every EvaluationRequest of the CLI use ``overrides`` for its models."""
    original = robustdc.evaluation.EvaluationRequest

    def request_with_overrides(*args, **kwargs):
        return original(*args, train_overrides=overrides, **kwargs)

    robustdc.evaluation.EvaluationRequest = request_with_overrides


def run_cli(arguments: list[str]) -> int:
    if "ROBUSTDC_TEST_TRAIN_OVERRIDES" in os.environ:
        install_train_overrides(json.loads(os.environ["ROBUSTDC_TEST_TRAIN_OVERRIDES"]))
    if "ROBUSTDC_TEST_OUTCOMES" in os.environ:
        install_outcome_recorder(Path(os.environ["ROBUSTDC_TEST_OUTCOMES"]))
    if "ROBUSTDC_TEST_FAIL_RANK" in os.environ:
        failing_rank = int(os.environ["ROBUSTDC_TEST_FAIL_RANK"])
        stage = os.environ["ROBUSTDC_TEST_FAIL_STAGE"]
        if stage == "attack":
            install_attack_failure(failing_rank)
        elif stage == "train":
            install_training_failure(failing_rank)
        else:
            raise ValueError(f"unknown ROBUSTDC_TEST_FAIL_STAGE {stage!r}")
    return main(arguments)


def gradient_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        "cnn9", "tanhconv", num_classes=10, in_channels=1, width=0.25, batch_norm=False
    )


def gradient_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(GRADIENT_BATCH, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (GRADIENT_BATCH,), generator=generator)
    return x, labels


def run_gradients(out: Path) -> int:
    model = gradient_model()
    x, labels = gradient_batch()
    with distributed.process_group(torch.device("cpu")):
        module = model
        if distributed.is_distributed():
            start, stop = distributed.shard_range(len(x), len(x) // distributed.world_size())
            x, labels = x[start:stop], labels[start:stop]
            module = parallel.data_parallel(model, torch.device("cpu"))
        module.train()
        F.cross_entropy(module(x), labels).backward()
        if distributed.is_main_process():
            torch.save(
                {
                    "gradients": {
                        name: parameter.grad.clone() for name, parameter in model.named_parameters()
                    },
                    "running_norms": [
                        layer.running_norm.clone() for layer in decoupled_layers(model)
                    ],
                },
                out,
            )
        # Free DistributedDataParallel before its process group is destroyed.
        del module
    return 0


def error_message(call) -> str:
    """Return ``TypeName: message`` of the exception that ``call()`` raises, or ''."""
    try:
        call()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return ""


def fail_on_rank_one() -> int:
    if distributed.rank() == 1:
        raise ValueError("rank one cannot compute this")
    return distributed.rank()


def run_collectives(out: Path) -> int:
    with distributed.process_group(torch.device("cpu")):
        rank = distributed.rank()
        messages = {
            "tags": error_message(lambda: distributed.gather_objects(f"step {rank}", rank)),
            "values": error_message(lambda: distributed.check_same("the rank", rank)),
            "compute": error_message(
                lambda: distributed.run_and_gather("compute", fail_on_rank_one)
            ),
            "results": distributed.run_and_gather("ranks", distributed.rank),
        }
        Path(f"{out}.{rank}.json").write_text(json.dumps(messages))
    return 0


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "cli":
        sys.exit(run_cli(rest))
    if mode == "gradients":
        sys.exit(run_gradients(Path(rest[0])))
    if mode == "collectives":
        sys.exit(run_collectives(Path(rest[0])))
    raise SystemExit(f"unknown mode {mode!r}; expected cli, gradients or collectives")
