"""Reuse a trained model when its checkpoint exists, else train it."""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from robustdc.train.checkpoint import (
    CheckpointNotFoundError,
    check_matches,
    checkpoint_dir,
    load_checkpoint,
    read_info,
)
from robustdc.train.config import TrainConfig, train_command
from robustdc.train.loop import train

logger = logging.getLogger(__name__)


def find_or_train(
    config: TrainConfig,
    workdir: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    data_dir: str | os.PathLike[str] | None = None,
    allow_train: bool = True,
    progress: bool = True,
    download: bool = True,
) -> tuple[nn.Module, TrainConfig, bool]:
    """Load the finished checkpoint of ``config``, training or finishing it if needed.

    A checkpoint with at least ``config.epochs`` finished epochs counts as finished.

    Args:
        config: the requested model.
        workdir: the work directory that contains ``models/``.
        device: where to load or train the model.
        data_dir: dataset folder, used only when training.
        allow_train: train (or resume) when no finished checkpoint exists. With False
            a missing or unfinished checkpoint raises.
        progress: show progress bars while training.
        download: download a missing dataset with torchvision.

    Returns:
        The model in eval mode, its config (``epochs`` as trained), and whether this
        call trained.

    Raises:
        CheckpointNotFoundError: ``allow_train`` is False and no finished checkpoint
            exists; the message names the folder and the command that trains it.
        CheckpointError: the checkpoint folder is invalid or contains another config.
        DatasetNotFoundError: training needs a dataset that is missing.
    """
    folder = checkpoint_dir(workdir, config)
    info = read_info(folder)
    if info is not None:
        check_matches(info, config)
        if info.epochs_completed >= config.epochs:
            model, stored = load_checkpoint(folder, device=device, expected=config)
            logger.info("%s: loaded the finished checkpoint %s", config.name, folder)
            return model, stored, False

    if not allow_train:
        command = train_command(config)
        done = "" if info is None else f" ({info.epochs_completed} of {config.epochs} epochs done)"
        raise CheckpointNotFoundError(
            f"no finished checkpoint in {folder}{done}; train it with: {command}",
            path=folder,
            command=command,
        )

    logger.info("no finished checkpoint in %s; training %s", folder, config.name)
    result = train(
        config,
        workdir,
        device=device,
        data_dir=data_dir,
        progress=progress,
        download=download,
    )
    return result.model, result.config, result.epochs_trained > 0
