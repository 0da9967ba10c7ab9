"""Adversarial examples for adversarial training, made by torchattacks.

:func:`adversarial_examples` is the only place where training calls torchattacks. It
crafts L-infinity FGSM (Goodfellow et al., 2015) or PGD (Madry et al., 2018, with a
uniform random start) examples in pixel space with bounds ``(0, 1)``, because every
robustdc model normalizes its input itself.

Model mode. The examples are crafted with the model in eval mode, and the adapter
restores the previous mode afterwards, also when the attack raises. In eval mode
BatchNorm uses its running statistics and the decoupled operators use their running
patch norm, so the attack's forward passes neither read batch statistics nor update any
running statistic. The running statistics change only in the training step that follows,
on the batch that is actually trained on. torchattacks 3.5.1 switches to eval mode
itself but returns to train mode only when the model was in train mode before, so the
adapter does not rely on it.
"""

from __future__ import annotations

import torchattacks
from torch import Tensor, nn

#: Attacks that :func:`adversarial_examples` can make.
METHODS: tuple[str, ...] = ("fgsm", "pgd")

BOUNDS = (0.0, 1.0)

# Allowed excess of |x_adv - x| over epsilon: float32 rounding of x + epsilon.
_EPSILON_TOLERANCE = 1e-6


def adversarial_examples(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    method: str,
    epsilon: float,
    steps: int | None = None,
    step_size: float | None = None,
) -> Tensor:
    """Return L-infinity adversarial examples of ``x`` against ``model``.

    Args:
        model: classifier of images in ``[0, 1]``.
        x: images ``(N, C, H, W)`` in ``[0, 1]``.
        labels: true labels ``(N,)``; the attacks increase the cross-entropy loss.
        method: ``fgsm`` (one signed-gradient step of size ``epsilon``) or ``pgd``
            (``steps`` signed-gradient steps of ``step_size`` from a uniformly random
            start in the epsilon ball, projected after each step).
        epsilon: L-infinity budget in pixel units, in (0, 1].
        steps: PGD steps; required for ``pgd``.
        step_size: PGD step size in pixel units; required for ``pgd``.

    Returns:
        Detached ``x_adv`` of the shape of ``x`` with ``|x_adv - x| <= epsilon`` and
        values in ``[0, 1]``.

    Raises:
        ValueError: for an unknown method, missing PGD settings or ``epsilon`` outside
            (0, 1].
        RuntimeError: torchattacks returned examples outside the bounds or the budget.
    """
    if method not in METHODS:
        raise ValueError(f"unknown adversarial method {method!r}; expected one of: fgsm, pgd")
    if not 0 < epsilon <= 1:
        raise ValueError(f"epsilon must be in (0, 1], got {epsilon!r}")
    if method == "pgd" and (steps is None or step_size is None):
        raise ValueError(f"pgd needs steps and step_size, got steps={steps}, step_size={step_size}")

    was_training = model.training
    model.eval()
    try:
        if method == "fgsm":
            attack = torchattacks.FGSM(model, eps=epsilon)
        else:
            attack = torchattacks.PGD(
                model, eps=epsilon, alpha=step_size, steps=steps, random_start=True
            )
        x_adv = attack(x, labels).detach()
    finally:
        model.train(was_training)

    _check_examples(x, x_adv, epsilon, method)
    return x_adv


def _check_examples(x: Tensor, x_adv: Tensor, epsilon: float, method: str) -> None:
    """Raise RuntimeError unless ``x_adv`` is in the bounds and the epsilon ball of ``x``."""
    if x_adv.shape != x.shape:
        raise RuntimeError(
            f"torchattacks {method} returned shape {tuple(x_adv.shape)} for inputs of shape "
            f"{tuple(x.shape)}"
        )
    low, high = BOUNDS
    if bool((x_adv < low).any()) or bool((x_adv > high).any()):
        raise RuntimeError(
            f"torchattacks {method} returned values outside the bounds [{low}, {high}]: "
            f"min {x_adv.min().item():.6g}, max {x_adv.max().item():.6g}"
        )
    distance = (x_adv - x.to(x_adv.device)).abs().amax().item() if x.numel() else 0.0
    if distance > epsilon + _EPSILON_TOLERANCE:
        raise RuntimeError(
            f"torchattacks {method} exceeded the budget: max |x_adv - x| = {distance:.6g} "
            f"> epsilon = {epsilon:.6g}"
        )
