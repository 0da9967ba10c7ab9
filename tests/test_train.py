"""Tests of training: configs, the training loop, checkpoints, resuming and the CLI.

Training runs on real MNIST images: the embedded ``mnist-sample`` and, where present,
the full datasets in ``SHARED_DATA``. No test uses the network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import robustdc.train.loop as loop
from robustdc.cli import main
from robustdc.data import DatasetNotFoundError, load_dataset
from robustdc.ops import decoupled_layers
from robustdc.train import (
    CONFIG_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    CheckpointNotFoundError,
    TrainConfig,
    adversarial_examples,
    checkpoint_dir,
    default_config,
    evaluate_accuracy,
    find_or_train,
    load_checkpoint,
    train,
)
from robustdc.train.calibration import calibrate_running_stats

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any socket connection fail, so that a test can never use the network."""

    def reject_connection(*args: object, **kwargs: object) -> None:
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", reject_connection)
    monkeypatch.setattr(socket.socket, "connect_ex", reject_connection)


def shared_data_dir(folder: str) -> Path:
    """Return the shared data directory, or skip when ``folder`` is absent from it."""
    if not (SHARED_DATA / folder).is_dir():
        pytest.skip(f"real {folder} files not found in {SHARED_DATA}")
    return SHARED_DATA


def tiny_config(model: str = "tanhconv", **overrides: object) -> TrainConfig:
    """A config that trains in about a second: 256 sample images, one epoch."""
    values: dict[str, object] = {"train_limit": 256, "epochs": 1}
    values.update(overrides)
    return default_config("mnist-sample", model, **values)


def snapshot_files(folder: Path) -> dict[str, bytes]:
    """Return the bytes of every file under ``folder``, by relative path."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_same_weights(first: nn.Module, second: nn.Module) -> None:
    first_state = first.state_dict()
    second_state = second.state_dict()
    assert list(first_state) == list(second_state)
    for key, value in first_state.items():
        assert torch.equal(value, second_state[key]), f"{key} differs"


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> loop.TrainResult:
    """The default mnist-sample tanhconv model, trained once for this module."""
    workdir = tmp_path_factory.mktemp("default-run")
    return train(default_config("mnist-sample", "tanhconv"), workdir, progress=False)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished tiny tanhconv checkpoint; copy it before changing it."""
    workdir = tmp_path_factory.mktemp("tiny-run")
    return train(tiny_config(), workdir, progress=False).checkpoint_dir


def copy_checkpoint(source: Path, workdir: Path, config: TrainConfig) -> Path:
    """Copy a checkpoint folder to where ``config`` expects it in ``workdir``."""
    folder = checkpoint_dir(workdir, config)
    shutil.copytree(source, folder)
    return folder


# ---------------------------------------------------------------------------
# TrainConfig


def test_default_config_names() -> None:
    assert default_config("mnist-sample", "tanhconv").name == "cnn9-tanhconv-cosine-natural"
    assert default_config("mnist-sample", "baseline").name == "cnn9-baseline-natural"
    fgsm = default_config("cifar10", "sphereconv", angular="sigmoid", training="fgsm")
    assert fgsm.name == "cnn9-sphereconv-sigmoid-fgsm"


def test_name_hashes_non_default_fields() -> None:
    default = default_config("mnist-sample", "tanhconv")
    wider = default_config("mnist-sample", "tanhconv", width=0.5)
    no_bn = default_config("mnist-sample", "tanhconv", batch_norm=False)
    assert wider.name.startswith("cnn9-tanhconv-cosine-natural-")
    assert len({default.name, wider.name, no_bn.name}) == 3
    assert wider.name == default_config("mnist-sample", "tanhconv", width=0.5).name


def test_name_ignores_epochs() -> None:
    default = default_config("mnist-sample", "tanhconv")
    longer = default_config("mnist-sample", "tanhconv", epochs=default.epochs + 5)
    assert longer.name == default.name


def test_default_config_per_dataset() -> None:
    cifar = default_config("cifar10", "tanhconv", training="pgd")
    assert cifar.augment is True
    assert cifar.batch_norm is False
    assert cifar.width == 1.0
    assert cifar.epsilon == pytest.approx(8 / 255)
    assert cifar.pgd_step_size == pytest.approx(2 / 255)
    natural = default_config("mnist", "tanhconv")
    assert natural.epsilon is None
    assert natural.pgd_steps is None


def test_config_round_trip() -> None:
    config = default_config("mnist-sample", "tanhconv", training="pgd", lr_milestones=[1, 2])
    as_json = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict(as_json) == config
    assert as_json["lr_milestones"] == [1, 2]


def test_from_dict_rejects_unknown_key() -> None:
    values = default_config("mnist-sample", "tanhconv").to_dict()
    values["colour"] = "red"
    with pytest.raises(ValueError, match="unknown TrainConfig field.*'colour'"):
        TrainConfig.from_dict(values)


def test_from_dict_rejects_missing_key() -> None:
    values = default_config("mnist-sample", "tanhconv").to_dict()
    del values["width"]
    with pytest.raises(ValueError, match="missing TrainConfig field.*width"):
        TrainConfig.from_dict(values)


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        pytest.param({"dataset": "mnsit"}, r"unknown dataset 'mnsit'.*'mnist'", id="dataset"),
        pytest.param({"arch": "cnn8"}, r"unknown architecture 'cnn8'.*cnn9", id="arch"),
        pytest.param({"model": "tanhcnov"}, r"unknown model 'tanhcnov'.*'tanhconv'", id="model"),
        pytest.param({"training": "adv"}, r"unknown training kind 'adv'", id="training"),
        pytest.param({"epochs": 0}, r"epochs must be an integer >= 1, got 0", id="epochs"),
        pytest.param({"batch_size": 0}, r"batch_size must be .* got 0", id="batch-size"),
        pytest.param({"lr": 0.0}, r"lr must be a finite number > 0, got 0.0", id="lr-zero"),
        pytest.param({"lr": float("nan")}, r"lr must be a finite number", id="lr-nan"),
        pytest.param(
            {"training": "fgsm", "epsilon": 0.0}, r"epsilon must be in \(0, 1\]", id="epsilon-0"
        ),
        pytest.param(
            {"training": "fgsm", "epsilon": 1.5}, r"epsilon must be in \(0, 1\].*1.5", id="eps-big"
        ),
        pytest.param({"epsilon": 0.1}, r"epsilon is used only by adversarial", id="eps-natural"),
        pytest.param({"pgd_steps": 3}, r"pgd_steps is used only by pgd", id="pgd-steps"),
        pytest.param({"augment": True}, r"augment=True is defined only for cifar10", id="augment"),
        pytest.param({"lr_milestones": [3, 2]}, r"strictly increasing", id="milestones"),
        pytest.param({"optimizer": "adamw"}, r"unknown optimizer 'adamw'", id="optimizer"),
        pytest.param({"seed": -1}, r"seed must be an integer in \[0, ", id="seed"),
        pytest.param({"widht": 0.5}, r"unknown TrainConfig field 'widht'.*'width'", id="field"),
        pytest.param(
            {"model": "baseline", "angular": "sigmoid"}, r"needs a decoupled operator", id="angular"
        ),
    ],
)
def test_config_rejects_invalid(arguments: dict[str, object], match: str) -> None:
    values: dict[str, object] = {"dataset": "mnist-sample", "model": "tanhconv"}
    values.update(arguments)
    with pytest.raises(ValueError, match=match):
        default_config(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Natural training and the checkpoint folder


def test_default_tanhconv_reaches_95_percent(default_run: loop.TrainResult) -> None:
    config = default_config("mnist-sample", "tanhconv")
    assert default_run.epochs_trained == config.epochs
    assert default_run.metrics["test_accuracy"].iloc[-1] >= 0.95
    test_set = load_dataset("mnist-sample", "test")
    assert evaluate_accuracy(default_run.model, test_set) >= 0.95
    assert not default_run.model.training


def test_checkpoint_files(default_run: loop.TrainResult) -> None:
    folder = default_run.checkpoint_dir
    config = default_config("mnist-sample", "tanhconv")
    assert folder == checkpoint_dir(folder.parents[2], config)
    assert folder.parts[-3:] == ("models", "mnist-sample", "cnn9-tanhconv-cosine-natural")

    document = json.loads((folder / CONFIG_FILE).read_text())
    assert document["epochs_completed"] == config.epochs
    assert document["training"] == "natural"
    assert document["name"] == config.name
    assert set(document["versions"]) >= {"torch", "torchattacks", "robustdc", "python"}
    assert "created" in document

    metrics = pd.read_csv(folder / METRICS_FILE)
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert metrics["epoch"].tolist() == list(range(1, config.epochs + 1))

    state_dict = torch.load(folder / MODEL_FILE, weights_only=True)
    assert set(state_dict) == set(default_run.model.state_dict())
    state = torch.load(folder / STATE_FILE, weights_only=True)
    assert state["epoch"] == config.epochs
    assert not any(path.name.endswith(".tmp") for path in folder.iterdir())


def test_finished_checkpoint_is_reused(default_run: loop.TrainResult) -> None:
    folder = default_run.checkpoint_dir
    workdir = folder.parents[2]
    before = snapshot_files(folder)
    config = default_config("mnist-sample", "tanhconv")

    model, loaded_config, trained = find_or_train(config, workdir, progress=False)
    assert trained is False
    assert loaded_config == config
    assert not model.training
    assert_same_weights(model, default_run.model)

    result = train(config, workdir, progress=False)
    assert result.epochs_trained == 0
    assert result.metrics["test_accuracy"].tolist() == pytest.approx(
        default_run.metrics["test_accuracy"].tolist()
    )
    assert snapshot_files(folder) == before


def test_fewer_epochs_reuse_longer_checkpoint(tmp_path: Path) -> None:
    longer = train(tiny_config(epochs=2), tmp_path, progress=False)
    model, loaded_config, trained = find_or_train(
        tiny_config(epochs=1), tmp_path, allow_train=False
    )
    assert trained is False
    assert loaded_config.epochs == 2
    assert_same_weights(model, longer.model)


def test_missing_checkpoint_without_training(tmp_path: Path) -> None:
    config = tiny_config()
    with pytest.raises(CheckpointNotFoundError, match="robustdc train --model tanhconv") as info:
        find_or_train(config, tmp_path, allow_train=False)
    assert info.value.path == checkpoint_dir(tmp_path, config)
    assert str(info.value.path) in str(info.value)
    assert not (tmp_path / "models").exists()


def test_optimizer_options_and_milestones(tmp_path: Path) -> None:
    config = tiny_config(
        optimizer="sgd",
        epochs=2,
        lr=0.01,
        lr_milestones=[1],
        weight_projection_every=1,
        orthogonal_penalty=1e-5,
        weighted_gradients=True,
    )
    result = train(config, tmp_path, progress=False)
    assert result.metrics["lr"].tolist() == pytest.approx([0.01, 0.001])
    # Projection after every step leaves every decoupled kernel at norm 1.
    layers = list(decoupled_layers(result.model))
    assert layers
    for layer in layers:
        norms = layer.weight.detach().flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))


# ---------------------------------------------------------------------------
# Adversarial training


class RecordingAdversary:
    """Wraps ``adversarial_examples`` and keeps each call's clean and perturbed inputs."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, str, float]] = []

    def __call__(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, **kwargs):
        x_adv = adversarial_examples(model, x, labels, **kwargs)
        self.calls.append((x.clone(), x_adv.clone(), kwargs["method"], kwargs["epsilon"]))
        return x_adv


def test_fgsm_training_mixes_clean_and_adversarial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adversary = RecordingAdversary()
    monkeypatch.setattr(loop, "adversarial_examples", adversary)
    config = tiny_config(training="fgsm", epsilon=0.2, batch_size=64)

    result = train(config, tmp_path, progress=False)

    document = json.loads((result.checkpoint_dir / CONFIG_FILE).read_text())
    assert document["training"] == "fgsm"
    assert document["epsilon"] == 0.2
    assert result.checkpoint_dir.name == config.name
    assert "fgsm" in config.name
    assert len(adversary.calls) == 256 // 64
    for x, x_adv, method, epsilon in adversary.calls:
        assert method == "fgsm"
        assert len(x) == 32  # the second half of each batch of 64
        distance = (x_adv - x).abs()
        assert distance.max() <= epsilon + 1e-6
        assert (distance > 0).float().mean() > 0.5
        assert x_adv.min() >= 0
        assert x_adv.max() <= 1


def test_pgd_training_replaces_whole_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adversary = RecordingAdversary()
    monkeypatch.setattr(loop, "adversarial_examples", adversary)
    config = tiny_config(training="pgd", pgd_steps=2, pgd_step_size=0.1, batch_size=128)

    result = train(config, tmp_path, progress=False)

    assert json.loads((result.checkpoint_dir / CONFIG_FILE).read_text())["training"] == "pgd"
    assert [len(x) for x, _, _, _ in adversary.calls] == [128, 128]
    for x, x_adv, method, epsilon in adversary.calls:
        assert method == "pgd"
        assert (x_adv - x).abs().max() <= epsilon + 1e-6
        assert not torch.equal(x_adv, x)


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
@pytest.mark.parametrize("training_mode", [True, False], ids=["train-mode", "eval-mode"])
def test_adapter_restores_mode_and_running_stats(method: str, training_mode: bool) -> None:
    torch.manual_seed(0)
    model = _small_model()
    model.train(training_mode)
    buffers = {key: value.clone() for key, value in model.named_buffers()}
    x = load_dataset("mnist-sample", "test", limit=16).images.float() / 255
    labels = load_dataset("mnist-sample", "test", limit=16).labels

    x_adv = adversarial_examples(
        model, x, labels, method=method, epsilon=0.1, steps=3, step_size=0.05
    )

    assert model.training is training_mode
    assert all(module.training is training_mode for module in model.modules())
    for key, value in model.named_buffers():
        assert torch.equal(value, buffers[key]), f"the attack changed buffer {key}"
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert not torch.equal(x_adv, x)


def _small_model() -> nn.Module:
    from robustdc.train import build_model_from_config

    return build_model_from_config(default_config("mnist-sample", "tanhconv", width=0.125))


def test_adapter_restores_mode_when_attack_fails() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("forward failed")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="forward failed"):
        adversarial_examples(
            model,
            torch.rand(2, 1, 2, 2),
            torch.zeros(2, dtype=torch.long),
            method="fgsm",
            epsilon=0.1,
        )
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"method": "cw", "epsilon": 0.1}, "unknown adversarial method", id="method"),
        pytest.param({"method": "fgsm", "epsilon": 0.0}, r"epsilon must be in", id="epsilon"),
        pytest.param({"method": "pgd", "epsilon": 0.1}, "pgd needs steps", id="pgd-steps"),
    ],
)
def test_adapter_rejects_invalid(kwargs: dict[str, object], match: str) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=match):
        adversarial_examples(
            model, torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), **kwargs
        )


def test_calibration_matches_batch_statistics() -> None:
    torch.manual_seed(0)
    model = _small_model().eval()
    parameters = {key: value.clone() for key, value in model.named_parameters()}
    x = load_dataset("mnist-sample", "train", limit=64).images.float() / 255

    assert calibrate_running_stats(model, [x]) == 1

    assert not model.training
    for key, value in model.named_parameters():
        assert torch.equal(value, parameters[key]), f"calibration changed {key}"
    eval_logits = model(x)
    train_logits = model.train()(x)
    # After one calibration batch the running statistics are that batch's statistics,
    # up to BatchNorm's unbiased variance, so eval mode reproduces train mode.
    torch.testing.assert_close(eval_logits, train_logits, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------
# Resuming


def stop_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make training raise KeyboardInterrupt after the training part of ``epoch``."""
    real = loop.evaluate_accuracy
    calls = {"count": 0}

    def interrupt(*args: object, **kwargs: object) -> float:
        calls["count"] += 1
        if calls["count"] == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "evaluate_accuracy", interrupt)


@pytest.mark.parametrize(
    ("overrides", "interrupt"),
    [
        pytest.param({}, False, id="natural-extended"),
        pytest.param({}, True, id="natural-interrupted"),
        pytest.param(
            {"training": "pgd", "pgd_steps": 2, "pgd_step_size": 0.1, "train_limit": 128},
            True,
            id="pgd-interrupted",
        ),
    ],
)
def test_resume_equals_uninterrupted_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, object],
    interrupt: bool,
) -> None:
    config = tiny_config(epochs=2, seed=3, **overrides)
    whole = train(config, tmp_path / "whole", progress=False)

    resumed_dir = tmp_path / "resumed"
    if interrupt:
        with monkeypatch.context() as patch:
            stop_in_epoch(patch, epoch=2)
            with pytest.raises(KeyboardInterrupt):
                train(config, resumed_dir, progress=False)
    else:
        train(tiny_config(epochs=1, seed=3, **overrides), resumed_dir, progress=False)
    folder = checkpoint_dir(resumed_dir, config)
    assert json.loads((folder / CONFIG_FILE).read_text())["epochs_completed"] == 1

    resumed = train(config, resumed_dir, progress=False)

    assert resumed.epochs_trained == 1
    assert_same_weights(resumed.model, whole.model)
    assert resumed.metrics["loss"].tolist() == whole.metrics["loss"].tolist()
    assert json.loads((folder / CONFIG_FILE).read_text())["epochs_completed"] == 2


def test_resume_with_truncated_state_raises(tmp_path: Path) -> None:
    train(tiny_config(epochs=1), tmp_path, progress=False)
    folder = checkpoint_dir(tmp_path, tiny_config())
    state = folder / STATE_FILE
    state.write_bytes(state.read_bytes()[:1000])
    before = snapshot_files(folder)

    with pytest.raises(CheckpointError, match=f"cannot read {re.escape(str(state))}.*truncated"):
        train(tiny_config(epochs=2), tmp_path, progress=False)
    assert snapshot_files(folder) == before


# ---------------------------------------------------------------------------
# Invalid checkpoints


class RunsCommand:
    """A pickle payload that runs a shell command when unpickled without restrictions."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (os.system, (self.command,))


def truncate_model(folder: Path, tmp_path: Path) -> None:
    data = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(data[: len(data) // 2])


def write_invalid_json(folder: Path, tmp_path: Path) -> None:
    (folder / CONFIG_FILE).write_text('{"dataset": "mnist-sample", ')


def write_unknown_config_key(folder: Path, tmp_path: Path) -> None:
    document = json.loads((folder / CONFIG_FILE).read_text())
    document["colour"] = "red"
    (folder / CONFIG_FILE).write_text(json.dumps(document))


def write_malicious_pickle(folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"weight": RunsCommand(f"touch {marker}")}, folder / MODEL_FILE)


def write_baseline_checkpoint(folder: Path, tmp_path: Path) -> None:
    baseline = train(tiny_config("baseline"), tmp_path / "baseline", progress=False)
    for path in baseline.checkpoint_dir.iterdir():
        shutil.copyfile(path, folder / path.name)


def remove_config(folder: Path, tmp_path: Path) -> None:
    (folder / CONFIG_FILE).unlink()


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        pytest.param(truncate_model, r"model\.pt: the file is truncated", id="truncated-model"),
        pytest.param(write_invalid_json, r"invalid config\.json .*not valid JSON", id="bad-json"),
        pytest.param(write_unknown_config_key, r"unknown TrainConfig field", id="unknown-key"),
        pytest.param(write_malicious_pickle, r"rejected .*model\.pt.*could run code", id="pickle"),
        pytest.param(
            write_baseline_checkpoint, r"model='baseline' \(requested 'tanhconv'\)", id="operator"
        ),
        pytest.param(remove_config, r"no config\.json", id="no-config"),
    ],
)
def test_invalid_checkpoint_raises_and_keeps_files(
    tiny_checkpoint: Path,
    tmp_path: Path,
    corrupt: Callable[[Path, Path], None],
    match: str,
) -> None:
    config = tiny_config()
    workdir = tmp_path / "work"
    folder = copy_checkpoint(tiny_checkpoint, workdir, config)
    corrupt(folder, tmp_path)
    before = snapshot_files(workdir)

    calls: list[Callable[[], object]] = [
        lambda: load_checkpoint(folder, expected=config),
        lambda: find_or_train(config, workdir, progress=False),
        lambda: train(config, workdir, progress=False),
    ]
    for call in calls:
        with pytest.raises(CheckpointError, match=match) as info:
            call()
        message = str(info.value)
        assert "\n" not in message
        assert "Delete or move" in message
        assert snapshot_files(workdir) == before
    assert not (tmp_path / "pwned").exists()


def test_load_checkpoint_accepts_model_file(tiny_checkpoint: Path) -> None:
    model, config = load_checkpoint(tiny_checkpoint / MODEL_FILE)
    assert config == tiny_config()
    assert not model.training


def test_load_checkpoint_of_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "nothing")


# ---------------------------------------------------------------------------
# Datasets


def test_missing_dataset_leaves_no_checkpoint(tmp_path: Path) -> None:
    config = default_config("mnist", "tanhconv", epochs=1)
    missing = tmp_path / "no-data"
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(missing))):
        train(config, tmp_path / "work", data_dir=missing, download=False, progress=False)
    assert not (tmp_path / "work").exists()


def test_trains_on_full_mnist_files(tmp_path: Path) -> None:
    data_dir = shared_data_dir("mnist")
    config = default_config(
        "mnist", "tanhconv", epochs=1, width=0.25, batch_size=32, train_limit=4096
    )
    result = train(config, tmp_path, data_dir=data_dir, download=False, progress=False)
    assert result.checkpoint_dir.parts[-2] == "mnist"
    assert result.metrics["test_accuracy"].iloc[-1] > 0.8


def test_trains_on_augmented_cifar10(tmp_path: Path) -> None:
    data_dir = shared_data_dir("cifar10")
    config = default_config("cifar10", "tanhconv", epochs=1, width=0.125, train_limit=256)
    assert config.augment
    result = train(config, tmp_path, data_dir=data_dir, download=False, progress=False)
    assert result.model.normalize.num_channels == 3
    assert len(result.metrics) == 1


# ---------------------------------------------------------------------------
# Command line


def test_cli_trains_and_reuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["train", "--model", "tanhconv", "--limit", "128", "--epochs", "1"]
    arguments += ["--workdir", str(tmp_path), "--device", "cpu"]
    assert main(arguments) == 0
    output = capsys.readouterr().out
    folder = checkpoint_dir(tmp_path, default_config("mnist-sample", "tanhconv", train_limit=128))
    assert f"checkpoint: {folder}" in output
    assert "test accuracy: " in output

    assert main(arguments) == 0
    assert "reused the finished checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        pytest.param(["--dataset", "mnsit"], "unknown dataset 'mnsit'", id="dataset"),
        pytest.param(["--arch", "cnn8"], "unknown arch 'cnn8'", id="arch"),
        pytest.param(["--model", "tanhcnov"], "unknown model 'tanhcnov'", id="model"),
        pytest.param(["--adversarial", "pdg"], "unknown --adversarial 'pdg'", id="adversarial"),
        pytest.param(["--adversarial", "fgsm", "--epsilon", "0"], "--epsilon '0'", id="eps-0"),
        pytest.param(["--adversarial", "fgsm", "--epsilon", "1.5"], "'1.5'", id="epsilon-big"),
        pytest.param(["--adversarial", "fgsm", "--epsilon", "-0.1"], "'-0.1'", id="eps-neg"),
        pytest.param(["--epsilon", "0.1"], "--epsilon applies to adversarial", id="eps-natural"),
        pytest.param(["--epochs", "0"], "expected an integer >= 1, got '0'", id="epochs"),
        pytest.param(["--batch-size", "0"], "expected an integer >= 1, got '0'", id="batch"),
        pytest.param(["--lr", "-1"], "lr must be a finite number > 0, got -1.0", id="lr"),
        pytest.param(["--optimizer", "adamw"], "unknown optimizer 'adamw'", id="optimizer"),
    ],
)
def test_cli_rejects_bad_input(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    fragment: str,
) -> None:
    command = ["train", "--model", "tanhconv", "--workdir", str(tmp_path), "--device", "cpu"]
    if "--model" in arguments:
        command = command[:1] + command[3:]
    with pytest.raises(SystemExit) as info:
        main([*command, *arguments])
    assert info.value.code == 2
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert fragment in error_lines[-1]
    assert error_lines[-1].startswith(("robustdc: error:", "usage:", "robustdc train: error:"))
    assert not (tmp_path / "models").exists()


def test_cli_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-data"
    command = ["train", "--model", "tanhconv", "--dataset", "mnist", "--data-dir", str(missing)]
    command += ["--no-download", "--workdir", str(tmp_path / "work"), "--device", "cpu"]
    with pytest.raises(SystemExit) as info:
        main(command)
    assert info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith("robustdc: error: dataset 'mnist'")
    assert str(missing) in error
