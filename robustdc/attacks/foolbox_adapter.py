"""Adapter for foolbox 3 (tested with 3.3.4): builds its attack objects from a spec.

The model is wrapped as ``foolbox.PyTorchModel(model, bounds=(0, 1), device=...)``
without preprocessing, because robustdc models normalize inside ``forward``. Bounded
attacks are called with ``epsilons=spec.epsilon`` and return foolbox's clipped
output. Minimum-norm attacks (DeepFool, Carlini-Wagner) are called with
``epsilons=None`` and return the unclipped result.

Library behaviour this adapter depends on (foolbox 3.3.4):

- ``PyTorchModel`` moves the model to its ``device`` argument, which defaults to CUDA
  when available. The adapter always passes the model's own device.
- For images that DeepFool did not fool, foolbox returns the last iterate, and its
  success flag is false.
- For images that Carlini-Wagner did not fool, foolbox returns an all-zero image and
  computes the success flag on that image, which the model may well misclassify. The
  adapter replaces such outputs by the clean image and sets their flag to false. A
  real Carlini-Wagner result is never exactly zero everywhere, because foolbox scales
  images by 0.999999 before its arctanh.
- foolbox imports GitPython, which fails at import time where no ``git`` executable
  exists unless ``GIT_PYTHON_REFRESH=quiet`` is set.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from robustdc.attacks.prepared import BatchResult, PreparedAttack, describe
from robustdc.attacks.spec import AttackSpec

logger = logging.getLogger(__name__)


def _import_foolbox() -> Any:
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import foolbox

    return foolbox


def prepare(
    model: nn.Module,
    spec: AttackSpec,
    *,
    num_classes: int,
    device: torch.device,
    seed: int,
) -> PreparedAttack:
    """Build the foolbox attack for ``spec`` on ``model``.

    ``num_classes`` and ``seed`` are part of the adapter contract, but foolbox attacks
    need neither. They draw random starts from torch's generator, which
    ``run_attack`` seeds.

    Raises:
        ValueError: ``spec`` names another library or an attack this adapter lacks.
    """
    foolbox = _import_foolbox()
    if spec.library != "foolbox":
        raise ValueError(f"expected a foolbox spec, got library {spec.library!r}")

    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), device=device)
    attack = _build(foolbox.attacks, spec)
    described = describe(attack)
    if spec.restarts > 1:
        # Repeated keeps, per image, the best run: a successful one within epsilon.
        attack = attack.repeat(spec.restarts)

    info: dict[str, Any] = {
        "library": "foolbox",
        "library_version": foolbox.__version__,
        **described,
        "bounds": [0.0, 1.0],
        "epsilons": spec.epsilon,
    }
    if spec.restarts > 1:
        info["repeated"] = spec.restarts
    logger.debug("prepared %s as %s", spec.label, info["class"])

    def run_batch(x: torch.Tensor, labels: torch.Tensor) -> BatchResult:
        _, clipped, success = attack(fmodel, x, labels, epsilons=spec.epsilon)
        if spec.name == "cw":
            clipped, success = _undo_zero_images(x, clipped, success)
        return clipped, success

    return PreparedAttack(run_batch=run_batch, info=info)


def _build(attacks: Any, spec: AttackSpec) -> Any:
    params = spec.params
    if spec.name == "fgsm":
        return attacks.LinfFastGradientAttack(random_start=False)
    if spec.name == "bim":
        return attacks.LinfBasicIterativeAttack(
            abs_stepsize=spec.step_size, steps=spec.steps, random_start=False
        )
    if spec.name == "pgd":
        pgd_class = attacks.LinfPGD if spec.norm == "linf" else attacks.L2PGD
        return pgd_class(
            abs_stepsize=spec.step_size, steps=spec.steps, random_start=params["random_start"]
        )
    if spec.name == "cw":
        return attacks.L2CarliniWagnerAttack(
            binary_search_steps=params["binary_search_steps"],
            steps=spec.steps,
            stepsize=spec.step_size,
            confidence=params["kappa"],
            initial_const=params["initial_const"],
            abort_early=True,
        )
    if spec.name == "deepfool":
        deepfool_class = (
            attacks.LinfDeepFoolAttack if spec.norm == "linf" else attacks.L2DeepFoolAttack
        )
        return deepfool_class(
            steps=spec.steps,
            candidates=params["candidates"],
            overshoot=params["overshoot"],
            loss="logits",
        )
    raise ValueError(f"attack {spec.name!r} is not available from foolbox")


def _undo_zero_images(
    x: torch.Tensor, x_adv: torch.Tensor, success: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace foolbox's all-zero "no adversarial found" outputs by the clean images."""
    not_found = (x_adv.flatten(1) == 0).all(dim=1) & (x.flatten(1) != 0).any(dim=1)
    if not not_found.any():
        return x_adv, success
    logger.debug("Carlini-Wagner found no adversarial for %d image(s)", int(not_found.sum()))
    mask = not_found.view(-1, *([1] * (x.ndim - 1)))
    return torch.where(mask, x, x_adv), success & ~not_found
