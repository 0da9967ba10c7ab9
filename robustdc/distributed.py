"""Process groups, sharding and gathering for runs launched by ``torchrun``.

``torchrun --nproc_per_node=N COMMAND`` starts N copies of a command and sets
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the
environment of each. :func:`process_group` reads them and initializes torch's default
process group: ``nccl`` on CUDA, with ``torch.cuda.set_device(LOCAL_RANK)``, and ``gloo``
on the CPU. Without these variables, or with ``WORLD_SIZE=1``, it changes nothing, and
every other helper here then acts as rank 0 of 1.

Collectives go through :func:`gather_objects`, which sends a tag with each value and
raises :class:`RankMismatchError` when the ranks arrive with different tags, so that ranks
that took different paths through the code fail at once instead of pairing unrelated
values. :func:`run_and_gather` also gathers errors: when any rank fails, every rank
raises :class:`RankFailedError`, which names the failing rank and its error.

This module imports nothing else of robustdc, so that training and evaluation share it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

#: Process-group backend per device type.
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}

_T = TypeVar("_T")


class DistributedRunError(RuntimeError):
    """An error that every rank raises at the same collective; rank 0 reports it."""


class RankFailedError(DistributedRunError):
    """A rank failed inside :func:`run_and_gather`.

    Attributes:
        rank: the lowest failing rank.
        world_size: the number of ranks.
    """

    def __init__(self, message: str, *, rank: int, world_size: int) -> None:
        super().__init__(message)
        self.rank = rank
        self.world_size = world_size


class RankMismatchError(DistributedRunError):
    """The ranks reached a collective with different tags or different values."""


@dataclass(frozen=True)
class LaunchEnvironment:
    """This process's place in a torchrun launch, read from the environment.

    Attributes:
        rank: global rank, ``RANK``, in ``[0, world_size)``.
        local_rank: rank on this machine, ``LOCAL_RANK``; the CUDA device index.
        world_size: number of processes over all machines, ``WORLD_SIZE``.
    """

    rank: int
    local_rank: int
    world_size: int


def launch_environment() -> LaunchEnvironment | None:
    """Return the torchrun variables of this process, or None unless ``WORLD_SIZE > 1``.

    Raises:
        ValueError: ``WORLD_SIZE``, ``RANK`` or ``LOCAL_RANK`` is missing or invalid.
    """
    world_text = os.environ.get("WORLD_SIZE")
    if world_text is None:
        return None
    world_size = _environment_integer("WORLD_SIZE", world_text, minimum=1)
    if world_size == 1:
        return None
    rank = _environment_integer("RANK", os.environ.get("RANK"), minimum=0)
    local_rank = _environment_integer("LOCAL_RANK", os.environ.get("LOCAL_RANK"), minimum=0)
    if rank >= world_size:
        raise ValueError(f"invalid RANK={rank}: expected a rank below WORLD_SIZE={world_size}")
    return LaunchEnvironment(rank=rank, local_rank=local_rank, world_size=world_size)


def _environment_integer(name: str, text: str | None, minimum: int) -> int:
    if text is None:
        raise ValueError(
            f"WORLD_SIZE is set but {name} is missing; launch the command with torchrun, "
            "which sets both"
        )
    try:
        value = int(text)
    except ValueError as err:
        raise ValueError(f"invalid {name}={text!r}: expected an integer >= {minimum}") from err
    if value < minimum:
        raise ValueError(f"invalid {name}={text!r}: expected an integer >= {minimum}")
    return value


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join the torchrun launch of this process, if any, and yield this rank's device.

    Under torchrun with ``WORLD_SIZE > 1`` this initializes the default process group
    from the environment (``init_method="env://"``) and destroys it on exit, also when
    the body raises. A CUDA ``device`` becomes ``cuda:LOCAL_RANK``. On the CPU, torch
    runs one thread per process unless ``OMP_NUM_THREADS`` is set, so that N processes
    do not each start one thread per core. torchrun itself sets ``OMP_NUM_THREADS=1``
    when it starts more than one process per machine and the variable is unset.
    Otherwise the device is yielded unchanged and nothing is initialized.

    Raises:
        ValueError: the torchrun variables are invalid, or a process group exists
            already. Also for a CUDA device with an index, because each rank uses
            ``cuda:LOCAL_RANK``, for ``LOCAL_RANK`` beyond the visible CUDA devices, and
            for a device type without a backend.
        RuntimeError: torch was built without distributed support.
    """
    environment = launch_environment()
    if environment is None:
        yield device
        return
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={environment.world_size} asks for a distributed run, but this torch "
            "build has no torch.distributed"
        )
    if dist.is_initialized():
        raise ValueError("a torch.distributed process group exists already in this process")
    if device.type not in BACKENDS:
        raise ValueError(
            f"no distributed backend for device {str(device)!r}; expected one of: "
            f"{', '.join(BACKENDS)}"
        )

    if device.type == "cuda":
        device = _rank_cuda_device(device, environment.local_rank)
        torch.cuda.set_device(device)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)

    backend = BACKENDS[device.type]
    dist.init_process_group(backend=backend, init_method="env://")
    logger.debug(
        "rank %d of %d joined the %s process group on %s",
        environment.rank,
        environment.world_size,
        backend,
        device,
    )
    try:
        yield device
        # Leave together, so that no rank destroys its group while another still sends.
        barrier("process group teardown")
    finally:
        # Collect unreachable objects, such as a finished DistributedDataParallel, while
        # the group exists. Left to interpreter shutdown, their gloo work objects made
        # about 1 in 10 two-process runs abort at exit with torch 2.14 ("terminate
        # called without an active exception").
        gc.collect()
        dist.destroy_process_group()


def _rank_cuda_device(device: torch.device, local_rank: int) -> torch.device:
    if device.index is not None:
        raise ValueError(
            f"--device {device} names one GPU, but under torchrun each process uses "
            "cuda:LOCAL_RANK; pass --device cuda and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(
            f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible; start at "
            "most one process per GPU (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def world_size() -> int:
    """Return the number of ranks of the default process group, 1 without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """Return this process's rank in the default process group, 0 without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def is_distributed() -> bool:
    """Return whether a process group with more than one rank is active."""
    return world_size() > 1


def is_main_process() -> bool:
    """Return whether this is rank 0, the rank that writes files and prints."""
    return rank() == 0


def shard_bounds(count: int, block: int, rank: int, world_size: int) -> tuple[int, int]:
    """Return the ``[start, stop)`` range of ``count`` items that ``rank`` takes.

    The items are cut into blocks of ``block`` (the last one may be shorter), and each
    rank takes a contiguous run of whole blocks, in rank order. The runs differ by at
    most one block, and lower ranks take the extra blocks, so rank 0's range is empty
    only when ``count`` is 0. Ranks beyond the number of blocks get an empty range.
    """
    if block < 1:
        raise ValueError(f"block must be an integer >= 1, got {block!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
    blocks = -(-count // block)
    share, extra = divmod(blocks, world_size)
    first = rank * share + min(rank, extra)
    last = first + share + (1 if rank < extra else 0)
    return min(first * block, count), min(last * block, count)


def shard_range(count: int, block: int) -> tuple[int, int]:
    """Return this rank's range of :func:`shard_bounds` in the default process group."""
    return shard_bounds(count, block, rank(), world_size())


def gather_objects(tag: str, value: _T) -> list[_T]:
    """Return ``value`` of every rank, in rank order; ``[value]`` without a group.

    Every rank must call this with the same ``tag``. The values are pickled, so pass
    small values and CPU tensors.

    Raises:
        RankMismatchError: the ranks passed different tags.
    """
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, (tag, value))
    tags = [item[0] for item in gathered]
    if any(other != tag for other in tags):
        arrivals = ", ".join(f"rank {index} at {other!r}" for index, other in enumerate(tags))
        raise RankMismatchError(
            f"the ranks are out of step: {arrivals}. Every rank must see the same "
            "workdir, checkpoints and results file"
        )
    return [item[1] for item in gathered]


def check_same(tag: str, value: object) -> None:
    """Raise :class:`RankMismatchError` unless every rank passes an equal ``value``."""
    values = gather_objects(tag, value)
    if any(other != values[0] for other in values):
        listing = ", ".join(f"rank {index}: {other!r}" for index, other in enumerate(values))
        raise RankMismatchError(
            f"the ranks disagree on {tag} ({listing}). Every rank must see the same "
            "workdir; on several machines put it on a shared filesystem"
        )


def broadcast_object(value: _T, tag: str) -> _T:
    """Return rank 0's ``value`` on every rank."""
    return gather_objects(tag, value)[0]


def barrier(tag: str) -> None:
    """Wait until every rank reaches the barrier with this tag."""
    gather_objects(tag, None)


def run_and_gather(tag: str, compute: Callable[[], _T]) -> list[_T]:
    """Run ``compute`` on every rank and return each rank's result, in rank order.

    Without a process group of more than one rank this returns ``[compute()]`` and lets
    its exceptions pass unchanged.

    Raises:
        RankFailedError: ``compute`` raised on at least one rank. Every rank raises it,
            with the lowest failing rank's error type and message, and the failing
            rank chains its own exception.
    """
    if not is_distributed():
        return [compute()]
    error: Exception | None = None
    outcome: tuple[str, Any]
    try:
        outcome = ("result", compute())
    except Exception as err:
        error = err
        outcome = ("error", f"{type(err).__name__}: {' '.join(str(err).split())}")
    outcomes = gather_objects(tag, outcome)
    failures = [(index, item[1]) for index, item in enumerate(outcomes) if item[0] == "error"]
    if failures:
        failed_rank, message = failures[0]
        others = f" (and {len(failures) - 1} more rank(s))" if len(failures) > 1 else ""
        raise RankFailedError(
            f"rank {failed_rank} of {len(outcomes)} failed{others}: {message}",
            rank=failed_rank,
            world_size=len(outcomes),
        ) from error
    return [item[1] for item in outcomes]


def sum_over_ranks(tag: str, values: tuple[float, ...]) -> tuple[float, ...]:
    """Return the elementwise sum of ``values`` over the ranks."""
    gathered = gather_objects(tag, tuple(values))
    return tuple(sum(column) for column in zip(*gathered, strict=True))


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (such as running statistics) into every rank's ``module``."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)
