"""Gradient-masking sanity checks (after Athalye et al. 2018 and Carlini et al. 2019).

A robust accuracy is only as good as the attack behind it. These checks look for the
usual signs that the attack failed rather than the model resisted:

* an iterative attack weaker than single-step FGSM at the same epsilon;
* a stronger Linf attack (PGD, AutoAttack) weaker than 10-step BIM on the same examples;
* a white-box attack weaker than a transfer attack from another model;
* robust accuracy that does not fall to about 0 at a huge epsilon;
* inputs whose loss gradient is exactly zero (saturated softmax or activations);
* DeepFool failing to flip samples it should always be able to flip;
* an attack that returned its inputs unchanged.

Each check returns a warning string or None; the harness stores the measured values in
the result row and the warnings with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Accuracy slack (as a fraction) before two robust accuracies count as ordered wrongly.
ORDER_TOLERANCE = 0.01
#: Robust accuracy above which the huge-epsilon probe counts as failed.
LARGE_EPSILON_MAX_ACCURACY = 0.10
#: Huge budgets of the probe per norm, for inputs in [0, 1]: at Linf 0.5 every image can
#: be moved to uniform grey; the L2 budget is scaled by sqrt(input dimension).
LARGE_EPSILON = {"linf": 0.5, "l2": 0.5}
#: Fraction of zero-gradient samples above which a warning is issued.
ZERO_GRADIENT_MAX_FRACTION = 0.05
#: Gradient-based Linf attacks expected to be at least as strong as 10-step BIM. Query-based
#: attacks such as Square can be weaker on a sound model, so they are not compared.
STRONGER_THAN_BIM = ("pgd", "autoattack")
#: DeepFool success rate below which a warning is issued.
DEEPFOOL_MIN_SUCCESS = 0.95


def large_epsilon(norm: str, input_numel: int) -> float:
    """Return the probe budget for ``norm`` and inputs of ``input_numel`` values."""
    if norm == "l2":
        return LARGE_EPSILON["l2"] * input_numel**0.5
    return LARGE_EPSILON["linf"]


def _slack(n_examples: int) -> float:
    return ORDER_TOLERANCE + 1.0 / max(1, n_examples)


def zero_gradient_fraction(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256
) -> float:
    """Return the fraction of samples whose cross-entropy input gradient is exactly 0."""
    return count_zero_gradients(model, images, labels, batch_size) / max(1, len(images))


def count_zero_gradients(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256
) -> int:
    """Return the number of samples whose cross-entropy input gradient is exactly 0."""
    was_training = [module.training for module in model.modules()]
    saved_grads = {name: p.grad for name, p in model.named_parameters()}
    model.eval()
    device = next(model.parameters()).device
    zero = 0
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).requires_grad_(True)
            y = labels[start : start + batch_size].to(device)
            loss = F.cross_entropy(model(x), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            zero += int((grad.flatten(1).abs().amax(dim=1) == 0).sum())
    finally:
        for module, training in zip(model.modules(), was_training, strict=True):
            module.train(training)
        for name, parameter in model.named_parameters():
            parameter.grad = saved_grads[name]
    return zero


def check_iterative_vs_fgsm(
    attack: str, robust_accuracy: float, fgsm_accuracy: float, n_examples: int
) -> str | None:
    return _weaker_than(
        attack,
        robust_accuracy,
        fgsm_accuracy,
        n_examples,
        reference="single-step FGSM at the same epsilon",
        meaning="the iterative attack is failing, a sign of gradient masking",
    )


def check_stronger_vs_bim(
    attack: str, robust_accuracy: float, bim_accuracy: float, n_examples: int
) -> str | None:
    return _weaker_than(
        attack,
        robust_accuracy,
        bim_accuracy,
        n_examples,
        reference="10-step BIM on the same examples",
        meaning="the stronger attack is failing, so check its steps and step size",
    )


def _weaker_than(
    attack: str,
    robust_accuracy: float,
    reference_accuracy: float,
    n_examples: int,
    *,
    reference: str,
    meaning: str,
) -> str | None:
    if robust_accuracy > reference_accuracy + _slack(n_examples):
        return (
            f"{attack} is weaker than {reference} ({robust_accuracy:.1%} vs "
            f"{reference_accuracy:.1%} robust accuracy): {meaning}"
        )
    return None


def check_white_box_vs_transfer(
    white_box_accuracy: float, transfer_accuracy: float, source: str, n_examples: int
) -> str | None:
    if white_box_accuracy > transfer_accuracy + _slack(n_examples):
        return (
            f"white-box attack is weaker than transfer from {source} "
            f"({white_box_accuracy:.1%} vs {transfer_accuracy:.1%} robust accuracy): the "
            "model's own gradients mislead the attack, a sign of gradient masking"
        )
    return None


def check_large_epsilon(accuracy: float, epsilon: float, norm: str) -> str | None:
    if accuracy > LARGE_EPSILON_MAX_ACCURACY:
        return (
            f"robust accuracy stays at {accuracy:.1%} at the huge epsilon {epsilon:.3g} "
            f"({norm}), where it should be about 0: the attack cannot find the "
            "perturbations that exist, a sign of gradient masking"
        )
    return None


def check_zero_gradients(fraction: float) -> str | None:
    if fraction > ZERO_GRADIENT_MAX_FRACTION:
        return (
            f"{fraction:.1%} of the samples have an exactly zero input gradient: "
            "gradient-based attacks cannot move them, so their robustness is not measured"
        )
    return None


def check_deepfool_success(success_rate: float, n_not_fooled: int) -> str | None:
    if success_rate < DEEPFOOL_MIN_SUCCESS:
        return (
            f"DeepFool flipped only {success_rate:.1%} of the correctly classified samples "
            f"({n_not_fooled} not fooled, excluded from the norm statistics): raise its "
            "steps or suspect gradient masking"
        )
    return None


def check_unchanged(n_changed: int, n_examples: int, attack: str) -> str | None:
    if n_examples and n_changed == 0:
        return (
            f"{attack} returned every correctly classified input unchanged: the attack did "
            "not run or found no gradient, so its robust accuracy is the clean accuracy, "
            "not a robustness"
        )
    return None
