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


# NOTE: Eager-mode memory traffic. A fresh CPU tensor larger than glibc's mmap threshold
# (at most 32 MiB) is page-faulted in on every allocation, which costs more than the
# arithmetic (about 10 ms for the 33 MB output of a 3->64 layer at batch 128 here). The
# eager paths below therefore reduce over channels in batch chunks of a few MiB and
# scale the convolution output in place. Under torch.compile the plain expressions are
# used and fused.
_CHUNK_BYTES = 4 << 20


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def channel_dot(a: Tensor, b: Tensor) -> Tensor:
    """Return ``(a * b).sum(dim=1, keepdim=True)`` without a full-size temporary."""
    if _compiling() or a.dim() < 2 or a.shape != b.shape:
        return (a * b).sum(dim=1, keepdim=True)
    rows = max(1, _CHUNK_BYTES // max(1, a[0].numel() * a.element_size()))
    result = torch.empty(
        (a.shape[0], 1, *a.shape[2:]), dtype=torch.result_type(a, b), device=a.device
    )
    for start in range(0, a.shape[0], rows):
        stop = start + rows
        torch.sum(a[start:stop] * b[start:stop], dim=1, keepdim=True, out=result[start:stop])
    return result


class _ChannelSquares(torch.autograd.Function):
    """``sum_c x**2`` per position; backward is the single pass ``2 x grad``."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return channel_dot(x, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return x * (2 * grad_output)


def channel_squares(x: Tensor) -> Tensor:
    """Return ``(x**2).sum(dim=1, keepdim=True)``, differentiably."""
    if _compiling():
        return x.square().sum(dim=1, keepdim=True)
    return _ChannelSquares.apply(x)


class _PatchScale(torch.autograd.Function):
    """``projection * per_patch`` (cosine) or ``projection * |projection| * per_patch``.

    Autograd would save ``projection`` for backward, a second tensor of the output's
    size. This function scales the projection in place and saves the output, which the
    next layer usually keeps anyway, and recovers the projection from it in backward:
    ``per_patch`` is always positive.
    """

    @staticmethod
    def forward(ctx, projection: Tensor, per_patch: Tensor, squared: bool) -> Tensor:
        if squared:
            output = projection.mul_(projection.abs().mul_(per_patch))
        else:
            output = projection.mul_(per_patch)
        ctx.mark_dirty(projection)
        ctx.squared = squared
        ctx.save_for_backward(output, per_patch)
        return output

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        output, per_patch = ctx.saved_tensors
        grad_projection = grad_per_patch = None
        if ctx.needs_input_grad[0]:
            if ctx.squared:
                # d(p |p| s)/dp = 2 |p| s, and |p| s = sqrt(|output| s).
                grad_projection = grad_output * (output.abs() * per_patch).sqrt_().mul_(2)
            else:
                grad_projection = grad_output * per_patch
        if ctx.needs_input_grad[1]:
            grad_per_patch = channel_dot(grad_output, output).div_(per_patch)
            if grad_per_patch.shape != per_patch.shape:
                grad_per_patch = grad_per_patch.sum_to_size(per_patch.shape)
        return grad_projection, grad_per_patch, None


def patch_scale(projection: Tensor, per_patch: Tensor, squared: bool) -> Tensor:
    """Return ``projection * per_patch``, or ``projection * |projection| * per_patch``.

    In eager mode ``projection`` is overwritten with the result: pass only a fresh
    convolution output that nothing else uses.
    """
    if _compiling():
        if squared:
            return projection * projection.abs() * per_patch
        return projection * per_patch
    return _PatchScale.apply(projection, per_patch, squared)


def kernel_divisor(w_norm: Tensor, angular_name: str, weighting: str) -> Tensor | None:
    """Return what the layer divides each kernel by before its convolution.

    Usually ``|w|``, so that the convolution gives ``<w, x> / |w|``. The linear weighting
    multiplies the response by ``|w|`` again, which is folded into the kernel for the
    functions that take the fast path of :func:`decoupled_response`: nothing for cosine
    (the plain ``<w, x>``) and ``sqrt(|w|)`` for sqcosine, whose response is quadratic in
    the projection. None means the kernel is used as it is.
    """
    if weighting == "linear" and angular_name == "cosine":
        return None
    if weighting == "linear" and angular_name == "sqcosine":
        return w_norm.sqrt()
    return w_norm


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
) -> Tensor:
    """Combine ``projection``, ``x_norm`` and ``w_norm`` into ``h * g``.

    Args:
        projection: the convolution with each kernel divided by
            :func:`kernel_divisor`, shape ``(N, C_out, *)``.
        x_norm: ``|x|`` per patch, broadcastable to ``projection`` (``(N, 1, *)``).
        w_norm: ``|w|`` per output channel, broadcastable to ``projection``.
        radius: the operator radius ``rho`` (a 0-d tensor) for ``|w|`` terms.
        x_radius: the radius applied to ``|x|``: ``rho`` times the mean patch norm
            when the radius is adaptive, else ``rho``.
    """
    # Cosine and squared cosine avoid acos: with cos = projection / |x|, the response
    # h * cos is projection * (h / |x|), and h / |x| is computed once per patch on the
    # single-channel tensor. One pass over the full output is left.
    if weighting in ("none", "linear") and angular_name in ("cosine", "sqcosine"):
        per_patch = magnitude(magnitude_name, x_norm, alpha, beta, x_radius) / x_norm
        squared = angular_name == "sqcosine"
        if squared:
            per_patch = per_patch / x_norm
        return patch_scale(projection, per_patch, squared)

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
