"""Adapter for torchattacks (tested with 3.5.1): builds its attack objects from a spec.

torchattacks assumes inputs in [0, 1]. robustdc models normalize inside ``forward``,
so the adapter never calls ``set_normalization_used``. Eval mode, frozen parameters and
seeding are handled by :func:`robustdc.attacks.run_attack`, not here.

Library behaviour this adapter depends on (torchattacks 3.5.1):

- ``torchattacks.AutoAttack`` runs APGD, APGD-T and FAB with 10 iterations, and its
  Square attack rescales its schedule. The reference AutoAttack ("standard" version of
  Croce and Hein's ``autoattack`` package) uses 100 iterations, 9 target classes and
  Square without rescaling, so :func:`_autoattack` composes the four attacks itself.
- ``CW`` maps pixels at exactly 0 or 1 to an infinite tanh-space value, so it never
  changes them, and it uses one fixed constant ``c`` without binary search.
- ``DeepFool`` attacks one image at a time with a full Jacobian per step, so it is
  much slower than foolbox's batched DeepFool. It also clips to [0, 1] after every
  step. On MNIST it flips fewer images than foolbox's DeepFool, likely for that reason.
- ``APGD``, ``APGDT``, ``FAB`` and ``Square`` call ``torch.manual_seed(seed)`` on the
  global generator; ``run_attack`` restores the caller's generator state afterwards.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from robustdc.attacks.prepared import BatchResult, PreparedAttack, describe
from robustdc.attacks.spec import AttackSpec

logger = logging.getLogger(__name__)

_NORM_NAMES = {"linf": "Linf", "l2": "L2"}


def prepare(
    model: nn.Module,
    spec: AttackSpec,
    *,
    num_classes: int,
    device: torch.device,
    seed: int,
) -> PreparedAttack:
    """Build the torchattacks attack for ``spec`` on ``model``.

    Args:
        model: classifier on ``device`` taking images in [0, 1].
        spec: a spec with ``library == "torchattacks"``.
        num_classes: number of logits, for the targeted parts of AutoAttack.
        device: the model's device.
        seed: seed of the attacks that take one (APGD, APGD-T, FAB, Square).

    Raises:
        ValueError: ``spec`` names another library or an attack this adapter lacks.
    """
    import torchattacks

    if spec.library != "torchattacks":
        raise ValueError(f"expected a torchattacks spec, got library {spec.library!r}")

    if spec.name == "autoattack":
        attack, components = _autoattack(torchattacks, model, spec, num_classes, seed)
    elif spec.restarts > 1:
        # Restarts of PGD: MultiAttack keeps, per image, the first run that fools the
        # model. Each run draws its own random start from the advancing generator.
        runs = [_single(torchattacks, model, spec, seed) for _ in range(spec.restarts)]
        attack = torchattacks.MultiAttack(runs)
        components = [describe(run) for run in runs]
    else:
        attack = _single(torchattacks, model, spec, seed)
        components = []

    info: dict[str, Any] = {
        "library": "torchattacks",
        "library_version": torchattacks.__version__,
        **describe(attack),
    }
    if components:
        info["components"] = components
    logger.debug("prepared %s as %s", spec.label, info["class"])

    def run_batch(x: torch.Tensor, labels: torch.Tensor) -> BatchResult:
        return attack(x, labels), None

    return PreparedAttack(run_batch=run_batch, info=info)


def _single(torchattacks: Any, model: nn.Module, spec: AttackSpec, seed: int) -> Any:
    params = spec.params
    if spec.name == "fgsm":
        return torchattacks.FGSM(model, eps=spec.epsilon)
    if spec.name == "bim":
        return torchattacks.BIM(model, eps=spec.epsilon, alpha=spec.step_size, steps=spec.steps)
    if spec.name == "pgd":
        pgd_class = torchattacks.PGD if spec.norm == "linf" else torchattacks.PGDL2
        return pgd_class(
            model,
            eps=spec.epsilon,
            alpha=spec.step_size,
            steps=spec.steps,
            random_start=params["random_start"],
        )
    if spec.name == "cw":
        return torchattacks.CW(
            model, c=params["c"], kappa=params["kappa"], steps=spec.steps, lr=spec.step_size
        )
    if spec.name == "deepfool":
        return torchattacks.DeepFool(model, steps=spec.steps, overshoot=params["overshoot"])
    if spec.name == "square":
        return torchattacks.Square(
            model,
            norm=_NORM_NAMES[spec.norm],
            eps=spec.epsilon,
            n_queries=params["queries"],
            n_restarts=spec.restarts,
            p_init=params["p_init"],
            seed=seed,
        )
    raise ValueError(f"attack {spec.name!r} is not available from torchattacks")


def _autoattack(
    torchattacks: Any, model: nn.Module, spec: AttackSpec, num_classes: int, seed: int
) -> tuple[Any, list[dict[str, Any]]]:
    """Compose standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square, in that order.

    Each attack runs only on the images that the previous ones did not fool. The
    settings follow the "standard" version of Croce and Hein's ``autoattack`` package.
    APGD-CE, APGD-T and FAB-T run 100 iterations with 1 restart, and the targeted two
    use 9 target classes (fewer when the model has fewer other classes). Square runs
    5000 queries with ``p_init=0.8`` and no schedule rescaling.
    """
    norm = _NORM_NAMES[spec.norm]
    steps = spec.steps
    target_classes = min(int(spec.params["target_classes"]), num_classes - 1)

    apgd_ce = torchattacks.APGD(
        model, norm=norm, eps=spec.epsilon, steps=steps, n_restarts=1, seed=seed, loss="ce"
    )
    apgd_t = torchattacks.APGDT(
        model,
        norm=norm,
        eps=spec.epsilon,
        steps=steps,
        n_restarts=1,
        seed=seed,
        n_classes=num_classes,
    )
    fab_t = torchattacks.FAB(
        model,
        norm=norm,
        eps=spec.epsilon,
        steps=steps,
        n_restarts=1,
        seed=seed,
        multi_targeted=True,
        n_classes=num_classes,
    )
    square = torchattacks.Square(
        model,
        norm=norm,
        eps=spec.epsilon,
        n_queries=spec.params["queries"],
        n_restarts=1,
        p_init=0.8,
        resc_schedule=False,
        seed=seed,
    )
    # torchattacks sets n_target_classes to n_classes - 1, but the reference uses 9.
    apgd_t.n_target_classes = target_classes
    fab_t.n_target_classes = target_classes

    parts = [apgd_ce, apgd_t, fab_t, square]
    components = [describe(part) for part in parts]
    for component, name in zip(components, ("apgd-ce", "apgd-t", "fab-t", "square"), strict=True):
        component["role"] = name
    return torchattacks.MultiAttack(parts), components
