"""Data-parallel training over the ranks of a torchrun launch.

:func:`robustdc.train.train` uses this module when torch's default process group has
more than one rank (see :func:`robustdc.distributed.process_group`):

- ``config.batch_size`` is the batch of one optimizer step over all ranks, so a config,
  and with it the checkpoint name, does not depend on the number of processes. Each rank
  takes ``batch_size / world_size`` examples per step from a ``DistributedSampler``
  seeded with ``config.seed`` and reshuffled every epoch.
- ``DistributedDataParallel`` averages the gradients.
- Decoupled layers with an adaptive radius average their batch mean patch norm over the
  ranks (:func:`robustdc.ops.sync_patch_norms`), so the operator radius and
  ``running_norm`` follow the batch of all ranks together, as in one process with that
  batch. The gradient through that mean is all-reduced too.
- BatchNorm normalizes with each rank's own batch statistics, as under plain DDP, and
  DDP copies rank 0's buffers to every rank before each forward pass.
  ``sync_batch_norm=True`` trains with ``nn.SyncBatchNorm`` instead, which normalizes
  with the statistics of all ranks' batches; torch implements it for GPU inputs only.
- After each epoch every rank re-estimates the running statistics on the same clean
  batches, without any collective (:mod:`robustdc.train.calibration`), and then rank
  0's buffers are broadcast. So every rank has the statistics that one process would
  compute from the same weights.

DDP and SyncBatchNorm wrap a *training view* of the model: a copy of the module tree
that shares every parameter and buffer tensor with the model. The optimizer, the
checkpoint, the calibration, the test accuracy and the eval-mode attacks of adversarial
training use the model itself, so they never run a collective or change its classes.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from robustdc import distributed
from robustdc.ops import sync_patch_norms


def rank_batch_size(batch_size: int) -> int:
    """Return the examples per rank and step for the global ``batch_size``.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the number of ranks.
    """
    world_size = distributed.world_size()
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} is not a multiple of the {world_size} processes; the "
            "batch size is the total over all processes, so choose a multiple of "
            f"{world_size} (e.g. {batch_size - batch_size % world_size or world_size})"
        )
    return batch_size // world_size


def distributed_sampler(dataset: Dataset, seed: int) -> DistributedSampler:
    """Return this rank's shuffling sampler; call ``set_epoch`` before every epoch."""
    # drop_last=False repeats a few examples so that every rank gets the same count,
    # and with it the same batch sizes, which sync_patch_norms relies on.
    return DistributedSampler(
        dataset,
        num_replicas=distributed.world_size(),
        rank=distributed.rank(),
        shuffle=True,
        seed=seed,
        drop_last=False,
    )


def check_sync_batch_norm(sync_batch_norm: bool, device: torch.device) -> None:
    """Raise ValueError when SyncBatchNorm is requested on a device that lacks it."""
    if sync_batch_norm and device.type != "cuda":
        raise ValueError(
            f"sync_batch_norm (--sync-batch-norm) needs CUDA devices, got {str(device)!r}: "
            "torch's SyncBatchNorm supports GPU inputs only. Train without it on the CPU"
        )


def data_parallel(
    model: nn.Module, device: torch.device, *, sync_batch_norm: bool = False
) -> DistributedDataParallel:
    """Return DistributedDataParallel over a training view of ``model``.

    The view shares the parameters and buffers of ``model`` (see the module docstring),
    averages its decoupled patch norms over the ranks and, with ``sync_batch_norm``,
    has ``nn.SyncBatchNorm`` in place of every BatchNorm layer.
    """
    check_sync_batch_norm(sync_batch_norm, device)
    view = training_view(model, sync_batch_norm=sync_batch_norm)
    sync_patch_norms(view, dist.group.WORLD)
    device_ids = None
    if device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(view, device_ids=device_ids)


def training_view(model: nn.Module, *, sync_batch_norm: bool = False) -> nn.Module:
    """Return a copy of the module tree of ``model`` that shares its tensors.

    Every module is a shallow copy: the copy has its own train/eval flag and its own
    submodules, but the same parameter and buffer dictionaries, so parameters, their
    gradients and in-place updates of running statistics are shared with ``model``.
    With ``sync_batch_norm`` each BatchNorm layer becomes an ``nn.SyncBatchNorm`` over
    the same tensors.
    """
    if sync_batch_norm and isinstance(model, _BatchNorm):
        return _shared_sync_batch_norm(model)
    view = copy.copy(model)
    view._modules = {
        name: None if child is None else training_view(child, sync_batch_norm=sync_batch_norm)
        for name, child in model._modules.items()
    }
    return view


def _shared_sync_batch_norm(norm: _BatchNorm) -> nn.SyncBatchNorm:
    sync = nn.SyncBatchNorm(
        norm.num_features,
        eps=norm.eps,
        momentum=norm.momentum,
        affine=norm.affine,
        track_running_stats=norm.track_running_stats,
    )
    # Share the dictionaries, so the fresh tensors made by the constructor are dropped.
    sync._parameters = norm._parameters
    sync._buffers = norm._buffers
    sync._non_persistent_buffers_set = norm._non_persistent_buffers_set
    sync.train(norm.training)
    return sync
