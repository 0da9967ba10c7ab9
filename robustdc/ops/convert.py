"""Conversion of ordinary models into decoupled networks."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from robustdc.ops.layers import DecoupledConv2d, DecoupledLinear

logger = logging.getLogger(__name__)


def _conv_to_decoupled(conv: nn.Conv2d, operator_kwargs: dict[str, Any]) -> DecoupledConv2d:
    layer = DecoupledConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
        **operator_kwargs,
    )
    layer.weight.data.copy_(conv.weight.data)
    if conv.bias is not None:
        layer.bias.data.copy_(conv.bias.data)
    layer.train(conv.training)
    return layer


def _linear_to_decoupled(linear: nn.Linear, operator_kwargs: dict[str, Any]) -> DecoupledLinear:
    layer = DecoupledLinear(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
        **operator_kwargs,
    )
    layer.weight.data.copy_(linear.weight.data)
    if linear.bias is not None:
        layer.bias.data.copy_(linear.bias.data)
    layer.train(linear.training)
    return layer


def decouple(
    model: nn.Module,
    magnitude: str = "tanh",
    angular: str = "cosine",
    *,
    include_linear: bool = False,
    **operator_kwargs: Any,
) -> nn.Module:
    """Replace the ``nn.Conv2d`` layers of ``model`` by decoupled ones, in place.

    Weights, biases, devices, dtypes and train/eval mode are kept, so a trained CNN
    initializes a decoupled network. Grouped convolutions (depthwise ones included) are
    kept as they are, because a decoupled patch norm spans all input channels; each one
    is logged. With ``include_linear`` the ``nn.Linear`` layers are replaced too.
    Activations with ``inplace=True`` are switched to ``inplace=False``.

    Args:
        model: any module, torchvision models included.
        magnitude, angular: the operator (see :class:`DecoupledConv2d`).
        include_linear: also replace ``nn.Linear`` layers by :class:`DecoupledLinear`.
        **operator_kwargs: further operator arguments (``weighting``, ``alpha``, ...).

    Returns:
        ``model`` itself, or the new layer if ``model`` is itself a Conv2d or Linear.
    """
    operator_kwargs = dict(operator_kwargs, magnitude=magnitude, angular=angular)
    # Validate the arguments once, before any layer is touched.
    DecoupledConv2d(1, 1, 1, **operator_kwargs)

    def convert(module: nn.Module, name: str) -> nn.Module | None:
        if isinstance(module, (DecoupledConv2d, DecoupledLinear)):
            return None
        if type(module) is nn.Conv2d:
            if module.groups != 1:
                logger.info("kept grouped convolution %s (groups=%d)", name, module.groups)
                return None
            return _conv_to_decoupled(module, operator_kwargs)
        if include_linear and type(module) is nn.Linear:
            return _linear_to_decoupled(module, operator_kwargs)
        return None

    replaced = convert(model, "model")
    if replaced is not None:
        return replaced
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            new = convert(child, f"{name}.{child_name}" if name else child_name)
            if new is not None:
                setattr(module, child_name, new)
    # A decoupled layer keeps its output for backward, so an in-place activation right
    # after it (Conv2d then ReLU(inplace=True), as in VGG) would break backward.
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return model
