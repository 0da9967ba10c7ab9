"""Building blocks shared by the architectures: the conv factory and conv-BN-ReLU.

An architecture never names an operator. It calls a :class:`ConvFactory` for each conv
layer, so one architecture definition builds the baseline CNN (``nn.Conv2d``) and every
decoupled network (:class:`robustdc.ops.DecoupledConv2d`) with the same layer layout.
A decoupled network has every state-dict key of its baseline, plus the operator's own
parameters and buffers (radius, running patch norm).
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from robustdc.models.validation import check_choice
from robustdc.ops import ANGULARS, OPERATORS, DecoupledConv2d

#: Command-line model name of the plain convolution.
BASELINE = "baseline"

# The architecture sets the layer shape and the operator name sets the magnitude, so
# these DecoupledConv2d arguments cannot come in through operator keyword arguments.
_FIXED_ARGUMENTS = frozenset(
    {
        "self",
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "bias",
        "groups",
        "padding_mode",
        "magnitude",
        "angular",
        "device",
        "dtype",
    }
)


def list_operators() -> list[str]:
    """Return the command-line model names, ``baseline`` first."""
    return [BASELINE, *OPERATORS]


class ConvFactory:
    """Factory of the conv layers of an architecture, for one operator.

    Args:
        operator: a command-line model name from :func:`list_operators`. ``baseline``
            gives ``nn.Conv2d``. Every other name gives a ``DecoupledConv2d`` with the
            magnitude function ``robustdc.ops.OPERATORS[operator]``.
        angular: the angular function ``g(theta)`` of the decoupled operators, one
            of ``robustdc.ops.ANGULARS``. The baseline accepts only ``"cosine"``,
            because a plain convolution is ``|w| |x| cos(theta)``.
        operator_kwargs: further ``DecoupledConv2d`` arguments (``weighting``,
            ``alpha``, ``beta``, ``radius``, ``adaptive_radius``, ...) applied to every
            conv layer. The baseline accepts none.

    Raises:
        ValueError: for an unknown operator or angular name, or for angular or
            operator arguments given to the baseline.
        TypeError: for an operator argument that ``DecoupledConv2d`` does not take or
            that the architecture sets itself (``kernel_size``, ``magnitude``, ...).
    """

    def __init__(
        self,
        operator: str,
        angular: str = "cosine",
        operator_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.operator = check_choice("operator", operator, list_operators())
        self.angular = check_choice("angular function", angular, ANGULARS)
        kwargs = dict(operator_kwargs or {})

        if self.operator == BASELINE:
            if self.angular != "cosine":
                raise ValueError(
                    f"angular function {angular!r} needs a decoupled operator, because "
                    "the baseline (nn.Conv2d) has the cosine angular function only"
                )
            if kwargs:
                raise ValueError(
                    "operator arguments apply only to decoupled operators, but the "
                    f"baseline (nn.Conv2d) got {sorted(kwargs)}"
                )
        else:
            _check_operator_kwargs(kwargs)

        self.operator_kwargs: Mapping[str, Any] = MappingProxyType(kwargs)

    @property
    def magnitude(self) -> str | None:
        """Magnitude function of the operator, or ``None`` for the baseline."""
        if self.operator == BASELINE:
            return None
        return OPERATORS[self.operator]

    def __call__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
    ) -> nn.Conv2d:
        """Create one ``nn.Conv2d`` or ``DecoupledConv2d`` (a subclass of it)."""
        if self.magnitude is None:
            return nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                bias=bias,
            )
        return DecoupledConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            bias=bias,
            magnitude=self.magnitude,
            angular=self.angular,
            **self.operator_kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(operator={self.operator!r}, "
            f"angular={self.angular!r}, operator_kwargs={dict(self.operator_kwargs)})"
        )


def _check_operator_kwargs(kwargs: Mapping[str, Any]) -> None:
    accepted = set(inspect.signature(DecoupledConv2d.__init__).parameters)
    for name in kwargs:
        if name in _FIXED_ARGUMENTS:
            raise TypeError(
                f"operator argument {name!r} is set by the architecture or the "
                "operator name. Remove it from the operator arguments"
            )
        if name not in accepted:
            allowed = sorted(accepted - _FIXED_ARGUMENTS)
            raise TypeError(
                f"DecoupledConv2d has no argument {name!r}; expected some of: {', '.join(allowed)}"
            )


def scaled_channels(channels: int, width: float) -> int:
    """Return ``channels * width`` rounded to an integer, at least 1."""
    return max(1, round(channels * width))


class ConvBNReLU(nn.Sequential):
    """A 3x3 conv (padding 1), BatchNorm if ``batch_norm``, then ReLU.

    Without BatchNorm the ``norm`` slot is ``nn.Identity`` and the conv gets a bias, so
    that layer count and names do not depend on ``batch_norm``.
    """

    def __init__(
        self, conv: ConvFactory, in_channels: int, out_channels: int, batch_norm: bool
    ) -> None:
        super().__init__(
            OrderedDict(
                conv=conv(in_channels, out_channels, 3, padding=1, bias=not batch_norm),
                norm=nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity(),
                relu=nn.ReLU(inplace=False),
            )
        )


def conv_stage(
    conv: ConvFactory, in_channels: int, widths: list[int], batch_norm: bool
) -> nn.Sequential:
    """Stack one :class:`ConvBNReLU` per entry of ``widths``."""
    layers = []
    for out_channels in widths:
        layers.append(ConvBNReLU(conv, in_channels, out_channels, batch_norm))
        in_channels = out_channels
    return nn.Sequential(*layers)


def init_weights(model: nn.Module) -> None:
    """Initialize conv weights with Kaiming normal (fan-out, ReLU gain), biases with 0.

    This covers ``DecoupledConv2d`` too, because it subclasses ``nn.Conv2d``. Operator
    parameters such as the radius keep their own initialization. BatchNorm layers start
    at weight 1 and bias 0, and linear layers keep the PyTorch default initialization.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
