"""Optimization helpers for decoupled networks (Liu et al., CVPR 2018, section 4).

* Weight projection: ``w <- s * w / |w|`` for every kernel, applied every few steps, so
  that unweighted operators, whose output ignores ``|w|``, keep a fixed kernel norm.
* Weighted gradients: ``grad <- |w| * grad`` per kernel for unweighted operators.
* Orthogonality penalty: ``lambda * ||W_hat^T W_hat - I||_F^2`` over the unit-normalized
  kernels ``W_hat`` (one column per output channel) of each decoupled layer.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from robustdc.ops.layers import DecoupledConv2d, DecoupledLinear


def decoupled_layers(model: nn.Module) -> Iterator[DecoupledConv2d | DecoupledLinear]:
    """Yield the decoupled layers of ``model``."""
    for module in model.modules():
        if isinstance(module, (DecoupledConv2d, DecoupledLinear)):
            yield module


def _kernel_norms(weight: Tensor, norm_eps: float) -> Tensor:
    """Return ``|w|`` per output channel, shaped to broadcast against ``weight``."""
    squares = weight.flatten(1).square().sum(dim=1) + norm_eps
    return squares.sqrt().view(-1, *([1] * (weight.dim() - 1)))


@torch.no_grad()
def project_weights(model: nn.Module, scale: float = 1.0) -> int:
    """Rescale every kernel of every decoupled layer to norm ``scale``.

    Returns:
        the number of layers projected.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    count = 0
    for layer in decoupled_layers(model):
        norms = layer.weight.flatten(1).norm(dim=1).clamp(min=1e-12)
        layer.weight.mul_(scale / norms.view(-1, *([1] * (layer.weight.dim() - 1))))
        count += 1
    return count


class WeightProjection:
    """Call :func:`project_weights` every ``every`` optimizer steps.

    Call :meth:`step` after each ``optimizer.step()``.
    """

    def __init__(self, model: nn.Module, every: int = 1, scale: float = 1.0) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.model = model
        self.every = every
        self.scale = scale
        self.steps = 0

    def step(self) -> bool:
        """Count one optimizer step; project when due. Returns whether it projected."""
        self.steps += 1
        if self.steps % self.every:
            return False
        project_weights(self.model, self.scale)
        return True


@torch.no_grad()
def weight_gradients(model: nn.Module) -> int:
    """Multiply the kernel gradients of unweighted decoupled layers by ``|w|``.

    Call it between ``loss.backward()`` and ``optimizer.step()``.

    Returns:
        the number of layers whose gradients were scaled.
    """
    count = 0
    for layer in decoupled_layers(model):
        if layer.weighting != "none" or layer.weight.grad is None:
            continue
        layer.weight.grad.mul_(_kernel_norms(layer.weight, layer.norm_eps))
        count += 1
    return count


def orthogonal_penalty(model: nn.Module, strength: float = 1e-5) -> Tensor:
    """Return ``strength * sum ||W_hat^T W_hat - I||_F^2`` over decoupled layers.

    ``W_hat`` has one unit-norm column per output channel, so the penalty is zero when
    the kernels of each layer are orthonormal. Add it to the loss.
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength!r}")
    total: Tensor | None = None
    for layer in decoupled_layers(model):
        columns = layer.weight.flatten(1)
        columns = columns / (columns.square().sum(dim=1, keepdim=True) + layer.norm_eps).sqrt()
        gram = columns @ columns.T
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        term = (gram - eye).square().sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return strength * total
