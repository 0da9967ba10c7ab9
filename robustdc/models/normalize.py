"""Input normalization inside the model, so that attacks work in pixel space.

Every model takes images in ``[0, 1]`` and starts with :class:`Normalize`. Attacks then
use ``bounds = (0, 1)`` and an ``epsilon`` in pixel units whatever the dataset, and the
gradient they see includes the division by ``std``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: Per-channel mean and standard deviation used when the caller gives none.
DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.5

ChannelStats = float | Sequence[float] | Tensor | None


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics stored as buffers.

    The buffers are persistent, so a checkpoint carries the statistics its model was
    trained with and loading it restores them. The state-dict keys are ``mean`` and
    ``std`` (shape ``(C,)``) whatever values were given.

    Args:
        num_channels: number of input channels ``C``.
        mean: a single value for all channels, or one value per channel. ``None``
            means 0.5.
        std: as ``mean``, and every value must be positive. ``None`` means 0.5.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: same shape as the input.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self, num_channels: int, mean: ChannelStats = None, std: ChannelStats = None
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        mean_values = _channel_values("mean", mean, DEFAULT_MEAN, num_channels)
        std_values = _channel_values("std", std, DEFAULT_STD, num_channels)
        if bool((std_values <= 0).any()):
            raise ValueError(f"std must be > 0 for every channel, got {std_values.tolist()}")
        self.register_buffer("mean", mean_values)
        self.register_buffer("std", std_values)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"expected input of shape (N, {self.num_channels}, H, W), got {tuple(x.shape)}"
            )
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        mean = ", ".join(f"{value:.4g}" for value in self.mean.tolist())
        std = ", ".join(f"{value:.4g}" for value in self.std.tolist())
        return f"mean=({mean}), std=({std})"


def _channel_values(name: str, values: ChannelStats, default: float, num_channels: int) -> Tensor:
    """Convert ``values`` to a float32 tensor of shape ``(num_channels,)``."""
    if values is None:
        values = default
    tensor = torch.as_tensor(values, dtype=torch.float32, device="cpu").detach().clone().flatten()
    if tensor.numel() == 1:
        tensor = tensor.expand(num_channels).clone()
    if tensor.numel() != num_channels:
        raise ValueError(
            f"{name} must have 1 or {num_channels} values (one per input channel), "
            f"got {tensor.numel()}"
        )
    if not all(math.isfinite(value) for value in tensor.tolist()):
        raise ValueError(f"{name} must be finite, got {tensor.tolist()}")
    return tensor
