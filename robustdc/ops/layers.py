"""Decoupled convolution and linear layers.

A decoupled operator (Liu et al., "Decoupled Networks", CVPR 2018) replaces the inner
product ``<w, x> = |w| |x| cos(theta)`` of a convolution with

    f(w, x) = h(|w|, |x|) * g(theta)

where ``h`` is a magnitude function and ``g`` an angular function:

==========  ==========================================================  =========
magnitude   h(|x|)                                                      bounded
==========  ==========================================================  =========
sphere      alpha                                                       yes
ball        alpha * min(|x|, rho) / rho                                 yes
tanh        alpha * tanh(|x| / rho)                                     yes
linear      alpha * |x|                                                 no
seg         alpha*|x| if |x| <= rho, else beta*|x| + (alpha - beta)*rho  no
log         alpha * log(1 + |x|)                                        no
mix         alpha*|x| + beta*log(1 + |x|)                               no
==========  ==========================================================  =========

Angular functions: ``linear`` ``1 - 2 theta / pi``; ``cosine`` ``cos(theta)``;
``sigmoid`` ``c (1 - exp(theta/k - pi/(2k))) / (1 + exp(theta/k - pi/(2k)))`` with
``c = (1 + exp(-pi/(2k))) / (1 - exp(-pi/(2k)))``; ``sqcosine`` ``sign(cos) cos**2``.

Weighting brings ``|w|`` back: ``none`` uses ``h(|x|)``; ``linear`` uses
``h(|x|) * |w|`` (magnitude ``linear``, ``cosine``, ``alpha = 1`` is then the plain
convolution up to ``norm_eps``); ``nonlinear`` uses ``h(|w| |x|)``, which for ``tanh`` is
the paper's eq. 15, ``alpha tanh(|w| |x| / rho)``; ``nonlinear-separate`` uses
``h(|x|) tanh(|w| / rho)``, which for ``tanh`` is eq. 16,
``alpha tanh(|w| / rho) tanh(|x| / rho)``. For other magnitudes these two weightings are
this library's generalization, not the paper's.

Norms: ``|x| = sqrt(sum(x**2 over the patch) + norm_eps)`` and likewise ``|w|``. The
patch norm is one single-channel convolution of ``sum_c x**2`` with a ones kernel of the
same size, stride, padding and dilation, and ``1 / |w|`` is folded into the kernels, so
the layer costs one ordinary convolution plus an elementwise tail.

The operator radius ``rho`` (``radius``, init 1) is stored as a free parameter ``r`` with
``rho = r**2 + 1e-4`` so that it stays positive when learned. With ``adaptive_radius``
(the default, after the paper's appendix B) ``|x|`` is compared with ``rho * E|x|``: in
training mode ``E|x|`` is the batch mean patch norm, which also updates the running mean
(``running_norm``) like BatchNorm's running statistics; eval mode uses ``running_norm``.
After :func:`sync_patch_norms` the batch mean is averaged over the ranks of a
distributed run.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdc.ops import functional as dcf

MIN_RADIUS = 1e-4


def _check_choice(kind: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; expected one of: {', '.join(allowed)}")


def _check_positive(name: str, value: float, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= minimum:
        raise ValueError(f"{name} must be a finite number > {minimum:g}, got {value!r}")


class _DecoupledOperator:
    """Operator state and response shared by the convolution and linear layers."""

    magnitude: str
    angular: str
    weighting: str
    #: Process group over which training mode averages the batch mean patch norm, or
    #: None to use this process's batch alone; set it with :func:`sync_patch_norms`.
    patch_norm_group: Any = None

    def _init_operator(
        self,
        magnitude: str,
        angular: str,
        weighting: str,
        alpha: float,
        beta: float | None,
        radius: float,
        learn_radius: bool,
        adaptive_radius: bool,
        radius_momentum: float,
        sigmoid_k: float,
        learn_sigmoid_k: bool,
        norm_eps: float,
    ) -> None:
        _check_choice("magnitude", magnitude, dcf.MAGNITUDES)
        _check_choice("angular function", angular, dcf.ANGULARS)
        _check_choice("weighting", weighting, dcf.WEIGHTINGS)
        _check_positive("alpha", alpha)
        _check_positive("radius", radius, MIN_RADIUS)
        _check_positive("norm_eps", norm_eps)
        _check_positive("sigmoid_k", sigmoid_k)
        _check_positive("radius_momentum", radius_momentum)
        if radius_momentum > 1:
            raise ValueError(f"radius_momentum must be in (0, 1], got {radius_momentum!r}")
        if beta is None:
            beta = dcf.DEFAULT_BETA.get(magnitude)
        elif magnitude not in dcf.DEFAULT_BETA:
            raise ValueError(
                f"beta is used only by the magnitudes {', '.join(dcf.DEFAULT_BETA)}, "
                f"got beta={beta!r} with magnitude {magnitude!r}; leave beta=None"
            )
        else:
            _check_positive("beta", beta)

        self.magnitude = magnitude
        self.angular = angular
        self.weighting = weighting
        self.alpha = float(alpha)
        self.beta = None if beta is None else float(beta)
        self.norm_eps = float(norm_eps)
        self.radius_momentum = float(radius_momentum)
        self.uses_radius = magnitude in dcf.RADIUS_MAGNITUDES or weighting in dcf.RADIUS_WEIGHTINGS
        self.adaptive_radius = bool(adaptive_radius) and self.uses_radius
        device = self.weight.device

        if self.uses_radius:
            free = torch.tensor(math.sqrt(radius - MIN_RADIUS), device=device)
            if learn_radius:
                self.radius_param = nn.Parameter(free)
            else:
                self.register_buffer("radius_param", free)
        if self.adaptive_radius:
            self.register_buffer("running_norm", torch.ones((), device=device))
            self.register_buffer(
                "num_batches_tracked", torch.zeros((), dtype=torch.long, device=device)
            )
        if angular == "sigmoid":
            k = torch.tensor(float(sigmoid_k), device=device)
            if learn_sigmoid_k:
                self.sigmoid_k = nn.Parameter(k)
            else:
                self.register_buffer("sigmoid_k", k)

    @property
    def radius(self) -> Tensor | None:
        """The operator radius ``rho`` (a 0-d tensor), or None if the operator has none."""
        if not self.uses_radius:
            return None
        return self.radius_param.square() + MIN_RADIUS

    def _x_radius(self, x_norm: Tensor, radius: Tensor) -> Tensor:
        """Return the radius that ``|x|`` is compared with, updating running stats."""
        if not self.adaptive_radius:
            return radius
        if self.training:
            batch_mean = x_norm.mean()
            if self.patch_norm_group is not None:
                batch_mean = _MeanOverRanks.apply(batch_mean, self.patch_norm_group)
            with torch.no_grad():
                # NOTE: a cumulative average over the first 1/momentum batches, then the
                # exponential one; the paper's decay 0.999 alone would take thousands of
                # steps to forget the initial value of 1.
                self.num_batches_tracked.add_(1)
                momentum = torch.clamp(
                    1.0 / self.num_batches_tracked.to(batch_mean.dtype),
                    min=self.radius_momentum,
                )
                self.running_norm.lerp_(batch_mean.detach().to(self.running_norm), momentum)
            return radius * batch_mean
        return radius * self.running_norm.to(x_norm.dtype)

    def _respond(self, projection: Tensor, x_norm: Tensor, w_norm: Tensor) -> Tensor:
        radius = self.radius
        x_radius = None
        if radius is not None:
            radius = radius.to(x_norm.dtype)
            x_radius = self._x_radius(x_norm, radius)
        sigmoid_k = None
        if self.angular == "sigmoid":
            sigmoid_k = self.sigmoid_k.clamp(min=1e-3).to(x_norm.dtype)
        return dcf.decoupled_response(
            projection,
            x_norm,
            w_norm,
            magnitude_name=self.magnitude,
            angular_name=self.angular,
            weighting=self.weighting,
            alpha=self.alpha,
            beta=self.beta,
            radius=radius,
            x_radius=x_radius,
            sigmoid_k=sigmoid_k,
        )

    def _operator_repr(self) -> str:
        parts = [
            f"magnitude={self.magnitude!r}",
            f"angular={self.angular!r}",
            f"weighting={self.weighting!r}",
            f"alpha={self.alpha:g}",
        ]
        if self.beta is not None:
            parts.append(f"beta={self.beta:g}")
        if self.uses_radius:
            parts.append(f"adaptive_radius={self.adaptive_radius}")
        return ", ".join(parts)


class _MeanOverRanks(torch.autograd.Function):
    """Mean of a tensor over the ranks of a process group, with its gradient.

    The output ``(1/N) sum_r x_r`` is the same on every rank, so the gradient of the
    summed loss of all ranks with respect to ``x_s`` is ``(1/N) sum_r g_r``, where
    ``g_r`` is the gradient arriving at rank r: backward all-reduces it as well.
    """

    @staticmethod
    def forward(ctx: Any, value: Tensor, group: Any) -> Tensor:
        ctx.group = group
        total = value.clone()
        torch.distributed.all_reduce(total, group=group)
        return total / torch.distributed.get_world_size(group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        total = grad.clone()
        torch.distributed.all_reduce(total, group=ctx.group)
        return total / torch.distributed.get_world_size(ctx.group), None


def sync_patch_norms(model: nn.Module, process_group: Any) -> int:
    """Make the adaptive-radius layers of ``model`` average their batch mean patch norm.

    In training mode each such layer then uses the mean of the batch mean patch norms
    of all ranks of ``process_group`` (``torch.distributed.group.WORLD`` for every
    rank), and adds it to ``running_norm``. This costs one all-reduce of a scalar per
    layer in the forward pass and one in the backward pass. When every rank's batch
    has the same size, which is the case with a ``DistributedSampler``, that is the mean
    patch norm of the batches of all ranks together. ``None`` turns the averaging off.
    While it is on, every rank must run the same forward passes in training mode, or
    the all-reduce blocks until the process group times out.

    Returns:
        the number of layers changed.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, _DecoupledOperator) and module.adaptive_radius:
            module.patch_norm_group = process_group
            changed += 1
    return changed


def _norm_dtype(dtype: torch.dtype) -> torch.dtype:
    # Norms are computed in at least float32: under bfloat16 autocast the squared input
    # of a 1e6-scaled image loses every digit, and in float16 it overflows.
    return torch.promote_types(dtype, torch.float32)


class DecoupledConv2d(_DecoupledOperator, nn.Conv2d):
    """2-d decoupled convolution ``h(|w|, |x|) * g(theta)`` over every input patch.

    Subclasses :class:`torch.nn.Conv2d`: ``weight`` (out, in, kh, kw), ``bias``,
    ``stride``, ``padding`` (int, tuple or ``"same"``), ``dilation`` and
    ``padding_mode`` mean what they mean there. ``groups`` must be 1.

    Args:
        magnitude: one of ``sphere ball tanh linear seg log mix``.
        angular: one of ``linear cosine sigmoid sqcosine``.
        weighting: one of ``none linear nonlinear nonlinear-separate``.
        alpha: scale of the magnitude, > 0.
        beta: second coefficient of ``seg`` (default 0.5) and ``mix`` (default 1).
        radius: initial operator radius ``rho`` > 1e-4 (used by ball, tanh, seg and the
            nonlinear weightings).
        learn_radius: make ``rho`` a parameter.
        adaptive_radius: scale ``rho`` by the running mean patch norm.
        radius_momentum: momentum of the running mean patch norm (0.001: decay 0.999).
        sigmoid_k: ``k`` of the sigmoid angular function; ``learn_sigmoid_k`` learns it.
        norm_eps: added under the square root of every norm.

    Shape:
        input ``(N, C_in, H, W)``, output ``(N, C_out, H_out, W_out)`` as for Conv2d.

    NOTE: for cosine and sqcosine without nonlinear weighting, the layer keeps its
    output for backward instead of a second tensor of that size. Modifying the output
    in place (``F.relu(y, inplace=True)``) then makes backward raise PyTorch's
    "modified by an inplace operation" error; use out-of-place activations.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        magnitude: str = "tanh",
        angular: str = "cosine",
        weighting: str = "none",
        alpha: float = 1.0,
        beta: float | None = None,
        radius: float = 1.0,
        learn_radius: bool = True,
        adaptive_radius: bool = True,
        radius_momentum: float = 0.001,
        sigmoid_k: float = 0.3,
        learn_sigmoid_k: bool = False,
        norm_eps: float = 1e-4,
        groups: int = 1,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if groups != 1:
            raise ValueError(
                f"DecoupledConv2d supports groups=1 only, got groups={groups!r}: the patch "
                "norm spans all input channels; keep grouped convolutions as nn.Conv2d"
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=1,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self._init_operator(
            magnitude,
            angular,
            weighting,
            alpha,
            beta,
            radius,
            learn_radius,
            adaptive_radius,
            radius_momentum,
            sigmoid_k,
            learn_sigmoid_k,
            norm_eps,
        )

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() != 4:
            raise ValueError(
                f"DecoupledConv2d expects a 4-d input (N, C, H, W), got shape "
                f"{tuple(input.shape)}; add a batch dimension with x.unsqueeze(0)"
            )
        x = input
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0

        weight = self.weight
        norm_dtype = _norm_dtype(weight.dtype)
        w_norm = (weight.to(norm_dtype).square().sum(dim=(1, 2, 3)) + self.norm_eps).sqrt()
        divisor = dcf.kernel_divisor(w_norm, self.angular, self.weighting)
        if divisor is not None:
            weight = weight / divisor.to(weight.dtype).view(-1, 1, 1, 1)
        projection = F.conv2d(x, weight, None, self.stride, padding, self.dilation)

        with torch.autocast(x.device.type, enabled=False):
            squares = dcf.channel_squares(x.to(_norm_dtype(x.dtype)))
            ones = torch.ones((1, 1, *self.kernel_size), dtype=squares.dtype, device=x.device)
            patch_squares = F.conv2d(squares, ones, None, self.stride, padding, self.dilation)
            # Rounding in the convolution can leave tiny negative sums.
            x_norm = (patch_squares.clamp(min=0) + self.norm_eps).sqrt()

        response = self._respond(projection, x_norm, w_norm.view(1, -1, 1, 1))
        response = response.to(projection.dtype)
        if self.bias is not None:
            response = response + self.bias.to(response.dtype).view(1, -1, 1, 1)
        return response

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._operator_repr()}"


class DecoupledLinear(_DecoupledOperator, nn.Linear):
    """Decoupled fully connected layer: the "patch" is the whole input vector.

    Takes the operator arguments of :class:`DecoupledConv2d`.

    Shape:
        input ``(*, in_features)``, output ``(*, out_features)`` as for Linear.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        magnitude: str = "tanh",
        angular: str = "cosine",
        weighting: str = "none",
        alpha: float = 1.0,
        beta: float | None = None,
        radius: float = 1.0,
        learn_radius: bool = True,
        adaptive_radius: bool = True,
        radius_momentum: float = 0.001,
        sigmoid_k: float = 0.3,
        learn_sigmoid_k: bool = False,
        norm_eps: float = 1e-4,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_operator(
            magnitude,
            angular,
            weighting,
            alpha,
            beta,
            radius,
            learn_radius,
            adaptive_radius,
            radius_momentum,
            sigmoid_k,
            learn_sigmoid_k,
            norm_eps,
        )

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() < 1 or input.shape[-1] != self.in_features:
            raise ValueError(
                f"DecoupledLinear expects an input of shape (*, {self.in_features}), got "
                f"shape {tuple(input.shape)}"
            )
        weight = self.weight
        norm_dtype = _norm_dtype(weight.dtype)
        w_norm = (weight.to(norm_dtype).square().sum(dim=1) + self.norm_eps).sqrt()
        divisor = dcf.kernel_divisor(w_norm, self.angular, self.weighting)
        if divisor is not None:
            weight = weight / divisor.to(weight.dtype).unsqueeze(1)
        projection = F.linear(input, weight)

        with torch.autocast(input.device.type, enabled=False):
            squares = input.to(_norm_dtype(input.dtype)).square().sum(dim=-1, keepdim=True)
            x_norm = (squares + self.norm_eps).sqrt()

        response = self._respond(projection, x_norm, w_norm)
        response = response.to(projection.dtype)
        if self.bias is not None:
            response = response + self.bias.to(response.dtype)
        return response

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._operator_repr()}"
