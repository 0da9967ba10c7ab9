"""Magnitude and angular functions of decoupled operators, as plain tensor functions.

Liu et al., "Decoupled Networks", CVPR 2018, write a convolution's response to a patch
``x`` as ``<w, x> = |w| |x| cos(theta)`` and replace it with ``h(|w|, |x|) * g(theta)``.
This module holds the names, formulas and the shared computation of that response from
three tensors that the layers compute cheaply:

* ``projection = <w, x> / |w|`` (one convolution with the unit-normalized kernels),
* ``x_norm = |x|`` per patch (one single-channel convolution of ``sum_c x**2``),
* ``w_norm = |w|`` per output channel.

Every norm includes ``norm_eps`` under the square root: ``|x| = sqrt(sum x**2 + norm_eps)``.
So ``cos(theta) = projection / x_norm`` and an all-zero patch gives ``cos = 0`` and a
response of 0 with finite gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

MAGNITUDES = ("sphere", "ball", "tanh", "linear", "seg", "log", "mix")
ANGULARS = ("linear", "cosine", "sigmoid", "sqcosine")
WEIGHTINGS = ("none", "linear", "nonlinear", "nonlinear-separate")

#: Command-line model names and the magnitude function each one uses.
OPERATORS = {
    "sphereconv": "sphere",
    "ballconv": "ball",
    "tanhconv": "tanh",
    "linearconv": "linear",
    "segconv": "seg",
    "logconv": "log",
    "mixconv": "mix",
}

#: Magnitudes whose response satisfies ``|h * g| <= alpha`` (unweighted).
BOUNDED_MAGNITUDES = frozenset({"sphere", "ball", "tanh"})
#: Magnitudes that use the operator radius ``rho``.
RADIUS_MAGNITUDES = frozenset({"ball", "tanh", "seg"})
#: Weightings that use the operator radius ``rho``.
RADIUS_WEIGHTINGS = frozenset({"nonlinear", "nonlinear-separate"})
#: Default ``beta`` of the magnitudes that have one.
DEFAULT_BETA = {"seg": 0.5, "mix": 1.0}

# The angle is clamped away from 0 and pi before acos, whose derivative is infinite there.
COS_CLAMP = 1.0 - 1e-6


@dataclass(frozen=True)
class MagnitudeInfo:
    """One row of the operator table: a magnitude function and its properties."""

    name: str
    model_name: str
    formula: str
    bounded: bool
    uses_radius: bool


MAGNITUDE_TABLE = (
    MagnitudeInfo("sphere", "sphereconv", "alpha", True, False),
    MagnitudeInfo("ball", "ballconv", "alpha * min(|x|, rho) / rho", True, True),
    MagnitudeInfo("tanh", "tanhconv", "alpha * tanh(|x| / rho)", True, True),
    MagnitudeInfo("linear", "linearconv", "alpha * |x|", False, False),
    MagnitudeInfo(
        "seg",
        "segconv",
        "alpha*|x| if |x| <= rho else beta*|x| + (alpha-beta)*rho  (beta=0.5)",
        False,
        True,
    ),
    MagnitudeInfo("log", "logconv", "alpha * log(1 + |x|)", False, False),
    MagnitudeInfo("mix", "mixconv", "alpha*|x| + beta*log(1 + |x|)  (beta=1)", False, False),
)

ANGULAR_FORMULAS = {
    "linear": "1 - 2*theta/pi",
    "cosine": "cos(theta)",
    "sigmoid": "c * (1 - exp(theta/k - pi/(2k))) / (1 + exp(theta/k - pi/(2k)))",
    "sqcosine": "sign(cos(theta)) * cos(theta)**2",
}

WEIGHTING_FORMULAS = {
    "none": "h(|x|) * g(theta)",
    "linear": "h(|x|) * |w| * g(theta)",
    "nonlinear": "h(|w| * |x|) * g(theta)",
    "nonlinear-separate": "h(|x|) * tanh(|w| / rho) * g(theta)",
}


def magnitude(
    name: str, norm: Tensor, alpha: float, beta: float | None, radius: Tensor | None
) -> Tensor:
    """Evaluate the magnitude function ``h`` at ``norm`` (any shape)."""
    if name == "sphere":
        return torch.full_like(norm, alpha)
    if name == "ball":
        return alpha * torch.minimum(norm, radius) / radius
    if name == "tanh":
        return alpha * torch.tanh(norm / radius)
    if name == "linear":
        return alpha * norm
    if name == "seg":
        return torch.where(norm <= radius, alpha * norm, beta * norm + (alpha - beta) * radius)
    if name == "log":
        return alpha * torch.log1p(norm)
    if name == "mix":
        return alpha * norm + beta * torch.log1p(norm)
    raise ValueError(f"unknown magnitude {name!r}; expected one of: {', '.join(MAGNITUDES)}")


def angular(name: str, cos: Tensor, sigmoid_k: Tensor | None = None) -> Tensor:
    """Evaluate the angular function ``g`` from ``cos(theta)``."""
    if name == "cosine":
        return cos
    if name == "sqcosine":
        return cos * cos.abs()
    theta = torch.acos(cos.clamp(-COS_CLAMP, COS_CLAMP))
    if name == "linear":
        return 1.0 - theta * (2.0 / math.pi)
    if name == "sigmoid":
        # The sigmoid function c * (1 - e) / (1 + e) with e = exp((theta - pi/2) / k)
        # equals tanh((pi/2 - theta) / (2k)) / tanh(pi / (4k)), which cannot overflow.
        return torch.tanh((math.pi / 2 - theta) / (2 * sigmoid_k)) / torch.tanh(
            math.pi / (4 * sigmoid_k)
        )
    raise ValueError(f"unknown angular function {name!r}; expected one of: {', '.join(ANGULARS)}")


def decoupled_response(
    projection: Tensor,
    x_norm: Tensor,
    w_norm: Tensor,
    *,
    magnitude_name: str,
    angular_name: str,
    weighting: str,
    alpha: float,
    beta: float | None,
    radius: Tensor | None,
    x_radius: Tensor | None,
    sigmoid_k: Tensor | None,
    projection_is_weighted: bool = False,
) -> Tensor:
    """Combine ``projection``, ``x_norm`` and ``w_norm`` into ``h * g``.

    Args:
        projection: ``<w, x> / |w|``, or ``<w, x>`` when ``projection_is_weighted``
            (only with the ``linear`` weighting and ``cosine``), shape ``(N, C_out, *)``.
        x_norm: ``|x|`` per patch, broadcastable to ``projection`` (``(N, 1, *)``).
        w_norm: ``|w|`` per output channel, broadcastable to ``projection``.
        radius: the operator radius ``rho`` (a 0-d tensor) for ``|w|`` terms.
        x_radius: the radius applied to ``|x|``: ``rho`` times the mean patch norm
            when the radius is adaptive, else ``rho``.
    """
    if projection_is_weighted and (weighting != "linear" or angular_name != "cosine"):
        raise ValueError("projection_is_weighted needs the linear weighting and cosine")
    # Cosine and squared cosine avoid acos: with cos = projection / |x|, the response
    # h * cos is projection * (h / |x|), and h / |x| is computed once per patch on the
    # single-channel tensor. Only one pass over the full output is left.
    if weighting in ("none", "linear") and angular_name in ("cosine", "sqcosine"):
        per_patch = magnitude(magnitude_name, x_norm, alpha, beta, x_radius) / x_norm
        if angular_name == "sqcosine":
            response = projection * projection.abs() * (per_patch / x_norm)
        else:
            response = projection * per_patch
        if weighting == "linear" and not projection_is_weighted:
            response = response * w_norm
        return response

    cos = projection / x_norm
    g = angular(angular_name, cos, sigmoid_k)
    if weighting == "nonlinear":
        return magnitude(magnitude_name, w_norm * x_norm, alpha, beta, x_radius) * g
    h = magnitude(magnitude_name, x_norm, alpha, beta, x_radius)
    if weighting == "linear":
        h = h * w_norm
    elif weighting == "nonlinear-separate":
        h = h * torch.tanh(w_norm / radius)
    return h * g
