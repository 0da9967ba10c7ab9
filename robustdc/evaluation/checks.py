"""Invariants that the harness enforces after every attack, in its own code.

An attack library may change the model's mode, update BatchNorm statistics, leave
gradients on parameters or return points outside the threat model. The harness does not
trust it: it snapshots the model before the attack, compares afterwards, and re-checks
every adversarial example against the bounds and the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: Slack for float32 rounding of ``x + delta`` when checking ``|x_adv - x| <= epsilon``.
LINF_TOLERANCE = 1e-5
L2_RELATIVE_TOLERANCE = 1e-4


class InvariantError(RuntimeError):
    """An attack broke the threat model or changed the model: its result is rejected."""


@dataclass
class ModelSnapshot:
    """Modes, buffers and parameter gradients of a model at one moment."""

    modes: list[bool]
    buffers: dict[str, Tensor]
    grads: dict[str, Tensor | None]

    @classmethod
    def take(cls, model: nn.Module) -> ModelSnapshot:
        return cls(
            modes=[module.training for module in model.modules()],
            buffers={name: buffer.detach().clone() for name, buffer in model.named_buffers()},
            grads={
                name: None if p.grad is None else p.grad.detach().clone()
                for name, p in model.named_parameters()
            },
        )

    def verify(self, model: nn.Module, attack_label: str) -> None:
        """Raise InvariantError if ``model`` differs from the snapshot; restore modes first."""
        modes = [module.training for module in model.modules()]
        if modes != self.modes:
            for module, training in zip(model.modules(), self.modes, strict=True):
                module.train(training)
            changed = sum(a != b for a, b in zip(modes, self.modes, strict=True))
            raise InvariantError(
                f"attack {attack_label} left {changed} module(s) in a different train/eval "
                "mode; the result is rejected (mode restored)"
            )
        for name, buffer in model.named_buffers():
            before = self.buffers.get(name)
            if before is None or not torch.equal(before, buffer.detach()):
                raise InvariantError(
                    f"attack {attack_label} changed the model buffer {name!r} (BatchNorm or "
                    "running patch-norm statistics): the model was not in eval mode during "
                    "the attack; the result is rejected"
                )
        for name, parameter in model.named_parameters():
            before = self.grads.get(name)
            after = parameter.grad
            same = (before is None and after is None) or (
                before is not None and after is not None and torch.equal(before, after)
            )
            if not same:
                raise InvariantError(
                    f"attack {attack_label} changed the gradient of parameter {name!r}; "
                    "the result is rejected"
                )


def perturbation_norms(x: Tensor, x_adv: Tensor) -> tuple[Tensor, Tensor]:
    """Return per-sample L2 and Linf norms of ``x_adv - x``, in float64."""
    delta = (x_adv.double() - x.double()).flatten(1)
    return delta.norm(p=2, dim=1), delta.abs().amax(dim=1)


def check_adversarial(
    x: Tensor,
    x_adv: Tensor,
    *,
    norm: str,
    epsilon: float | None,
    bounds: tuple[float, float],
    attack_label: str,
) -> None:
    """Raise InvariantError unless every ``x_adv`` is in bounds and within epsilon."""
    if x_adv.shape != x.shape:
        raise InvariantError(
            f"attack {attack_label} returned shape {tuple(x_adv.shape)} for inputs of shape "
            f"{tuple(x.shape)}"
        )
    if not torch.isfinite(x_adv).all():
        raise InvariantError(f"attack {attack_label} returned non-finite inputs")
    low, high = bounds
    below = (x_adv < low).flatten(1).any(dim=1)
    above = (x_adv > high).flatten(1).any(dim=1)
    outside = int((below | above).sum())
    if outside:
        raise InvariantError(
            f"attack {attack_label} returned {outside} example(s) outside the bounds "
            f"[{low:g}, {high:g}]; the result is rejected"
        )
    if epsilon is None:
        return
    l2, linf = perturbation_norms(x, x_adv)
    if norm == "linf":
        excess = linf - epsilon
        limit = LINF_TOLERANCE
    else:
        excess = l2 - epsilon
        limit = epsilon * L2_RELATIVE_TOLERANCE + 1e-6
    violations = int((excess > limit).sum())
    if violations:
        worst = float(excess.max() + epsilon)
        raise InvariantError(
            f"attack {attack_label} returned {violations} example(s) farther than epsilon "
            f"{epsilon:.6g} from the input in {norm} (largest {worst:.6g}); the result is "
            "rejected"
        )
