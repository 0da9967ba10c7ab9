"""The training loop: natural, FGSM and PGD adversarial training, resumable per epoch.

:func:`train` trains the model of a :class:`~robustdc.train.config.TrainConfig` and keeps
its checkpoint folder (see :mod:`robustdc.train.checkpoint`) up to date after every
epoch. Calling it again with the same config continues from the last finished epoch, and
with the same seed and device the result equals an uninterrupted run. A finished
checkpoint is loaded instead of trained.

Training kinds:

- ``natural``: cross-entropy on the clean batch.
- ``fgsm``: the first half of each shuffled batch (rounded down) stays clean and the
  rest is replaced by its FGSM examples, made on the fly against the current model, as in
  Kurakin et al., "Adversarial Machine Learning at Scale" (2016). Both halves go through
  one forward pass, so BatchNorm normalizes them together, and each example has equal
  weight in the loss.
- ``pgd``: each batch is replaced by its PGD examples with a random start (Madry et al.,
  "Towards Deep Learning Models Resistant to Adversarial Attacks", 2018).

The examples are crafted in eval mode; :mod:`robustdc.train.adversarial` explains why.
The reported training loss and accuracy are those of the inputs actually trained on, so
for adversarial training they include the adversarial examples. The test accuracy is on
the clean test split.

Under torchrun (a process group with more than one rank) training is data-parallel, as
described in :mod:`robustdc.train.parallel`, and only rank 0 writes the checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR, ReduceLROnPlateau
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from robustdc import distributed
from robustdc.data import ImageDataset, load_dataset
from robustdc.ops import WeightProjection, orthogonal_penalty, weight_gradients
from robustdc.train import parallel
from robustdc.train.adversarial import adversarial_examples
from robustdc.train.calibration import calibrate_running_stats
from robustdc.train.checkpoint import (
    CONFIG_FILE,
    FORMAT_VERSION,
    METRIC_COLUMNS,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    CheckpointInfo,
    check_matches,
    checkpoint_dir,
    delete_hint,
    load_checkpoint,
    load_state_dict_into,
    load_torch_file,
    read_info,
    read_metrics,
    save_torch,
    utc_now,
    write_config,
    write_metrics,
)
from robustdc.train.config import TrainConfig, build_model_from_config
from robustdc.train.seeding import capture_rng_state, restore_rng_state, seed_everything

logger = logging.getLogger(__name__)

#: Batches of training images used to re-estimate running statistics after each epoch.
CALIBRATION_BATCHES = 20

SGD_MOMENTUM = 0.9
#: Factor applied to the learning rate at a milestone or on a plateau.
LR_FACTOR = 0.1
#: ReduceLROnPlateau divides the lr after more than this many epochs without a lower loss.
PLATEAU_PATIENCE = 2
#: Batch size of test-accuracy evaluation; it only affects speed and memory.
EVAL_BATCH_SIZE = 500

_STATE_KEYS = (
    "format_version",
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "rng",
    "projection_steps",
    "metrics",
)


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model: the trained model, in eval mode.
        config: its config; ``epochs`` is the number of epochs it was trained for.
        checkpoint_dir: the checkpoint folder.
        metrics: one row per epoch with the columns of ``metrics.csv``.
        epochs_trained: epochs run by this call; 0 when a finished checkpoint was
            loaded.
    """

    model: nn.Module
    config: TrainConfig
    checkpoint_dir: Path
    metrics: pd.DataFrame
    epochs_trained: int


def train(
    config: TrainConfig,
    workdir: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    download: bool = True,
    sync_batch_norm: bool = False,
) -> TrainResult:
    """Train the model of ``config`` into ``checkpoint_dir(workdir, config)``.

    Resumes from the last finished epoch when the folder has an unfinished checkpoint
    of the same config, and loads without training when it has a finished one.
    Training seeds the global generators of Python's ``random``, numpy and torch with
    ``config.seed``.

    When torch's default process group has more than one rank, every rank must call
    this with the same arguments and see the same workdir. Training is then
    data-parallel (see :mod:`robustdc.train.parallel`), only rank 0 writes files, and
    every rank returns after the checkpoint is complete.

    Args:
        config: what to train.
        workdir: the work directory; the checkpoint goes to
            ``<workdir>/models/<dataset>/<config.name>/``.
        device: where to train.
        data_dir: dataset folder; see :func:`robustdc.data.resolve_data_dir`.
        progress: show a progress bar per epoch when stderr is a terminal.
        download: download a missing dataset with torchvision.
        sync_batch_norm: in a distributed run, train with ``nn.SyncBatchNorm``
            (CUDA only). One process ignores it.

    Raises:
        CheckpointError: the folder contains an invalid checkpoint or one of another
            config. The folder is left as it is.
        DatasetNotFoundError: the dataset files are missing and could not be
            downloaded.
        ValueError: in a distributed run, ``config.batch_size`` is not a multiple of
            the number of ranks, or ``sync_batch_norm`` is set on the CPU.
        RankMismatchError: in a distributed run, the ranks see different checkpoints.
    """
    device = torch.device(device)
    parallel.check_sync_batch_norm(sync_batch_norm, device)
    if distributed.is_distributed():
        parallel.rank_batch_size(config.batch_size)
    main_process = distributed.is_main_process()
    folder = checkpoint_dir(workdir, config)
    info = _existing_checkpoint(folder, config)
    distributed.check_same(
        f"the finished epochs of {folder}", None if info is None else info.epochs_completed
    )
    if info is not None and info.epochs_completed >= config.epochs:
        model, stored = load_checkpoint(folder, device=device, expected=config)
        logger.info(
            "%s: reusing the finished checkpoint %s (%d epochs)",
            config.name,
            folder,
            stored.epochs,
        )
        return TrainResult(model, stored, folder, read_metrics(folder), epochs_trained=0)

    train_set = load_dataset(
        config.dataset,
        "train",
        data_dir=data_dir,
        download=download,
        augment=config.augment,
        limit=config.train_limit,
    )
    test_set = load_dataset(config.dataset, "test", data_dir=data_dir, download=download)
    run = _TrainingRun(config, device, train_set, sync_batch_norm=sync_batch_norm)

    created = utc_now()
    rows: list[dict[str, float]] = []
    start_epoch = 0
    if info is None:
        if main_process:
            folder.mkdir(parents=True, exist_ok=True)
            write_config(folder, config, epochs_completed=0, created=created, test_accuracy=None)
    else:
        created = info.created or created
        state = _read_state(folder, info, device)
        if state is not None:
            start_epoch, rows = run.load_state(state, folder / STATE_FILE)
            logger.info(
                "%s: resuming %s after epoch %d of %d",
                config.name,
                folder,
                start_epoch,
                config.epochs,
            )
        distributed.check_same(f"the epoch to resume {folder} from", start_epoch)
        if start_epoch > info.epochs_completed and main_process:
            # A crash after writing state.pt and before config.json: finish that commit.
            _commit(folder, config, run, start_epoch, rows, created)

    show_progress = progress and sys.stderr.isatty() and main_process
    for epoch in range(start_epoch + 1, config.epochs + 1):
        lr = run.optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        loss, train_accuracy = run.train_epoch(epoch, show_progress)
        calibrate_running_stats(
            run.model, _calibration_batches(train_set, config.batch_size, device)
        )
        distributed.broadcast_buffers(run.model)
        test_accuracy = _test_accuracy(run.model, test_set, device)
        seconds = time.perf_counter() - started
        run.step_scheduler(loss)

        rows.append(
            {
                "epoch": epoch,
                "loss": loss,
                "train_accuracy": train_accuracy,
                "test_accuracy": test_accuracy,
                "lr": lr,
                "seconds": seconds,
            }
        )
        if main_process:
            _commit(folder, config, run, epoch, rows, created)
        logger.info(
            "%s epoch %d/%d: loss %.4f, train accuracy %.2f%%, test accuracy %.2f%%, "
            "lr %.3g, %.1f s",
            config.name,
            epoch,
            config.epochs,
            loss,
            100 * train_accuracy,
            100 * test_accuracy,
            lr,
            seconds,
        )

    run.model.eval()
    # Drop DistributedDataParallel, which removes its gradient hooks from the parameters.
    run.train_module = run.model
    # The other ranks wait until rank 0 has written the last epoch.
    distributed.barrier(f"{folder} written")
    metrics = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    return TrainResult(
        run.model,
        config,
        folder,
        metrics,
        epochs_trained=config.epochs - start_epoch,
    )


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = EVAL_BATCH_SIZE,
) -> float:
    """Return the accuracy of ``model`` on the clean, unaugmented ``dataset``.

    The model runs in eval mode and gets its previous mode back afterwards.
    """
    correct = _count_correct(model, dataset, 0, len(dataset), device, batch_size)
    return correct / max(len(dataset), 1)


def _test_accuracy(model: nn.Module, dataset: ImageDataset, device: torch.device) -> float:
    """Return :func:`evaluate_accuracy`, with the batches shared out among the ranks."""
    if not distributed.is_distributed():
        return evaluate_accuracy(model, dataset, device=device)
    start, stop = distributed.shard_range(len(dataset), EVAL_BATCH_SIZE)
    correct = _count_correct(model, dataset, start, stop, device, EVAL_BATCH_SIZE)
    (correct,) = distributed.sum_over_ranks("test accuracy", (correct,))
    return correct / max(len(dataset), 1)


@torch.no_grad()
def _count_correct(
    model: nn.Module,
    dataset: ImageDataset,
    start: int,
    stop: int,
    device: torch.device | str,
    batch_size: int,
) -> int:
    """Count the correctly classified images ``start`` to ``stop`` in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for begin in range(start, stop, batch_size):
            end = min(begin + batch_size, stop)
            x = dataset.images[begin:end].to(device).float().div_(255.0)
            labels = dataset.labels[begin:end].to(device)
            correct += int((model(x).argmax(dim=1) == labels).sum())
    finally:
        model.train(was_training)
    return correct


class _TrainingRun:
    """Model, optimizer, scheduler and data order of one training run."""

    def __init__(
        self,
        config: TrainConfig,
        device: torch.device,
        train_set: ImageDataset,
        *,
        sync_batch_norm: bool = False,
    ):
        self.config = config
        self.device = device

        # The seed fixes the initial weights, and the loader generator the data order.
        seed_everything(config.seed)
        self.model = build_model_from_config(config).to(device)
        self.optimizer = _make_optimizer(config, self.model)
        self.scheduler = _make_scheduler(config, self.optimizer)
        self.projection = (
            WeightProjection(self.model, every=config.weight_projection_every)
            if config.weight_projection_every
            else None
        )
        self.loader_generator = torch.Generator().manual_seed(config.seed)
        # The module that training steps call: the model itself, or DDP over a view of it.
        self.train_module: nn.Module = self.model
        self.sampler: DistributedSampler | None = None
        if not distributed.is_distributed():
            self.loader = DataLoader(
                train_set,
                batch_size=config.batch_size,
                shuffle=True,
                generator=self.loader_generator,
                num_workers=0,
            )
            return
        # NOTE: every rank keeps the same global random state (seeded alike, drawing the
        # same amounts), so PGD random starts and CIFAR crops and flips repeat across
        # ranks, on different images. That lets rank 0's state.pt resume every rank.
        self.sampler = parallel.distributed_sampler(train_set, config.seed)
        self.loader = DataLoader(
            train_set,
            batch_size=parallel.rank_batch_size(config.batch_size),
            sampler=self.sampler,
            generator=self.loader_generator,
            num_workers=0,
        )
        self.train_module = parallel.data_parallel(
            self.model, device, sync_batch_norm=sync_batch_norm
        )

    def train_epoch(self, epoch: int, show_progress: bool) -> tuple[float, float]:
        """Run one epoch; return the mean training loss and the training accuracy.

        In a distributed run both are over the examples of every rank.
        """
        config = self.config
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.train_module.train()
        total_loss = 0.0
        correct = 0
        count = 0
        batches = tqdm(
            self.loader,
            desc=f"{config.name} epoch {epoch}/{config.epochs}",
            unit="batch",
            leave=False,
            disable=not show_progress,
        )
        for x, labels in batches:
            x = x.to(self.device)
            labels = labels.to(self.device)
            inputs = self._training_inputs(x, labels)

            logits = self.train_module(inputs)
            loss = F.cross_entropy(logits, labels)
            objective = loss
            if config.orthogonal_penalty:
                objective = objective + orthogonal_penalty(self.model, config.orthogonal_penalty)

            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            if config.weighted_gradients:
                weight_gradients(self.model)
            self.optimizer.step()
            if self.projection is not None:
                self.projection.step()

            total_loss += loss.item() * len(labels)
            correct += int((logits.argmax(dim=1) == labels).sum())
            count += len(labels)
            batches.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        total_loss, correct, count = distributed.sum_over_ranks(
            "training loss and accuracy", (total_loss, correct, count)
        )
        return total_loss / count, correct / count

    def _training_inputs(self, x: Tensor, labels: Tensor) -> Tensor:
        """Return the inputs to train on for ``x``: clean, half FGSM, or PGD."""
        config = self.config
        if config.training == "natural":
            return x
        assert config.epsilon is not None  # checked by TrainConfig
        if config.training == "fgsm":
            half = len(x) // 2
            x_adv = adversarial_examples(
                self.model, x[half:], labels[half:], method="fgsm", epsilon=config.epsilon
            )
            return torch.cat([x[:half], x_adv])
        return adversarial_examples(
            self.model,
            x,
            labels,
            method="pgd",
            epsilon=config.epsilon,
            steps=config.pgd_steps,
            step_size=config.pgd_step_size,
        )

    def step_scheduler(self, loss: float) -> None:
        """Advance the learning-rate schedule after an epoch with mean training ``loss``."""
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(loss)
        else:
            self.scheduler.step()

    def state(self, epoch: int, rows: list[dict[str, float]]) -> dict[str, Any]:
        """Return everything needed to resume after ``epoch``, for ``state.pt``."""
        return {
            "format_version": FORMAT_VERSION,
            "epoch": epoch,
            "model": _cpu_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng_state(self.loader_generator),
            "projection_steps": self.projection.steps if self.projection is not None else 0,
            "metrics": [dict(row) for row in rows],
        }

    def load_state(self, state: dict[str, Any], path: Path) -> tuple[int, list[dict[str, float]]]:
        """Restore a :meth:`state`; return its epoch and metric rows.

        Raises:
            CheckpointError: ``state`` does not fit this run.
        """
        load_state_dict_into(self.model, state["model"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            restore_rng_state(state["rng"], self.loader_generator)
            rows = [{key: float(value) for key, value in row.items()} for row in state["metrics"]]
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise CheckpointError(
                f"invalid {path}: cannot restore the training state ({err}). {delete_hint(path)}"
            ) from err
        if self.projection is not None:
            self.projection.steps = int(state["projection_steps"])
        for row in rows:
            row["epoch"] = int(row["epoch"])
        return int(state["epoch"]), rows


def _calibration_batches(
    dataset: ImageDataset, batch_size: int, device: torch.device
) -> list[Tensor]:
    """Return the first CALIBRATION_BATCHES batches of clean training images, in order."""
    # NOTE: clean images only, also for adversarial training, whose BatchNorm statistics
    # during training mix clean and adversarial batches.
    count = min(len(dataset), CALIBRATION_BATCHES * batch_size)
    images = dataset.images[:count].to(device=device, dtype=torch.float32).div_(255)
    return list(images.split(batch_size))


def _make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=SGD_MOMENTUM,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer
) -> LRScheduler | ReduceLROnPlateau:
    if config.lr_milestones:
        return MultiStepLR(optimizer, milestones=list(config.lr_milestones), gamma=LR_FACTOR)
    return ReduceLROnPlateau(optimizer, mode="min", factor=LR_FACTOR, patience=PLATEAU_PATIENCE)


def _cpu_state_dict(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().cpu() for key, value in model.state_dict().items()}


def _existing_checkpoint(folder: Path, config: TrainConfig) -> CheckpointInfo | None:
    """Return the checkpoint in ``folder`` if it matches ``config``, or None if none.

    Raises:
        CheckpointError: the folder contains checkpoint files without ``config.json``, an
            invalid ``config.json``, or the checkpoint of another config.
    """
    info = read_info(folder)
    if info is None:
        stray = [
            name for name in (MODEL_FILE, STATE_FILE, METRICS_FILE) if (folder / name).exists()
        ]
        if stray:
            raise CheckpointError(
                f"checkpoint {folder} has {', '.join(stray)} but no {CONFIG_FILE}, so it "
                f"cannot be resumed. {delete_hint(folder)}"
            )
        return None
    check_matches(info, config)
    return info


def _read_state(folder: Path, info: CheckpointInfo, device: torch.device) -> dict[str, Any] | None:
    """Load ``state.pt`` of an unfinished checkpoint and check its format.

    Returns None when no epoch has finished yet and there is no ``state.pt``.

    Raises:
        CheckpointError: the file is missing after a finished epoch, unreadable, or
            inconsistent with ``config.json``.
    """
    path = folder / STATE_FILE
    if not path.exists() and info.epochs_completed == 0:
        return None
    state = load_torch_file(path, device)
    if not isinstance(state, dict) or any(key not in state for key in _STATE_KEYS):
        raise CheckpointError(
            f"invalid {path}: expected a training state with the keys "
            f"{', '.join(_STATE_KEYS)}. {delete_hint(path)}"
        )
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"invalid {path}: expected format_version {FORMAT_VERSION}, got "
            f"{state['format_version']!r}. {delete_hint(path)}"
        )
    epoch = state["epoch"]
    # state.pt is written before config.json, so it is at most one epoch ahead.
    completed = info.epochs_completed
    if not isinstance(epoch, int) or not completed <= epoch <= completed + 1:
        raise CheckpointError(
            f"invalid {path}: its epoch {epoch!r} does not follow the {completed} finished "
            f"epochs recorded in {folder / CONFIG_FILE}. {delete_hint(folder)}"
        )
    return state


def _commit(
    folder: Path,
    config: TrainConfig,
    run: _TrainingRun,
    epoch: int,
    rows: list[dict[str, float]],
    created: str,
) -> None:
    """Save the checkpoint after ``epoch``: state.pt first, config.json last."""
    save_torch(run.state(epoch, rows), folder / STATE_FILE)
    save_torch(_cpu_state_dict(run.model), folder / MODEL_FILE)
    write_metrics(folder, rows)
    write_config(
        folder,
        config,
        epochs_completed=epoch,
        created=created,
        test_accuracy=rows[-1]["test_accuracy"] if rows else None,
    )
