"""Registry of architectures and the :func:`build_model` factory.

An architecture is registered under its command-line name with :func:`register`. Its
builder is called as ``builder(conv, num_classes=..., in_channels=..., width=...,
batch_norm=..., mean=..., std=..., **arch_kwargs)``, where ``conv`` is a
:class:`~robustdc.models.layers.ConvFactory`, and returns an ``nn.Module`` whose
``forward(x)`` maps images in ``[0, 1]`` to logits.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from robustdc.models.layers import ConvFactory
from robustdc.models.normalize import ChannelStats
from robustdc.models.validation import check_choice, check_model_size

logger = logging.getLogger(__name__)

ModelBuilder = Callable[..., nn.Module]
BuilderT = TypeVar("BuilderT", bound=ModelBuilder)

#: Architecture builders by command-line name, filled by :func:`register`.
MODELS: dict[str, ModelBuilder] = {}


def register(name: str) -> Callable[[BuilderT], BuilderT]:
    """Register the decorated class or function as the architecture ``name``.

    Registering a name twice warns and replaces the earlier builder.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"architecture name must be a non-empty string, got {name!r}")

    def decorator(builder: BuilderT) -> BuilderT:
        if name in MODELS:
            warnings.warn(
                f"architecture {name!r} is already registered to {MODELS[name]!r}; "
                f"replacing it with {builder!r}",
                stacklevel=2,
            )
        MODELS[name] = builder
        return builder

    return decorator


def list_architectures() -> list[str]:
    """Return the registered architecture names, sorted."""
    return sorted(MODELS)


def build_model(
    arch: str,
    operator: str,
    angular: str = "cosine",
    num_classes: int = 10,
    in_channels: int = 3,
    width: float = 1.0,
    batch_norm: bool = True,
    mean: ChannelStats = None,
    std: ChannelStats = None,
    *,
    arch_kwargs: Mapping[str, Any] | None = None,
    **operator_kwargs: Any,
) -> nn.Module:
    """Build the architecture ``arch`` with every conv layer made by ``operator``.

    Every conv layer, shortcut projections included, is ``nn.Conv2d`` for the
    ``baseline`` operator and ``robustdc.ops.DecoupledConv2d`` otherwise. Linear layers
    stay ``nn.Linear`` for every operator, so the operators differ only in the feature
    extractor. To decouple the linear layers too, pass the built model to
    ``robustdc.ops.decouple(model, magnitude, include_linear=True)``, which leaves the
    decoupled convs as they are.

    Args:
        arch: architecture name, one of :func:`list_architectures`.
        operator: command-line model name, one of
            :func:`~robustdc.models.layers.list_operators`.
        angular: angular function of the decoupled operators. The baseline accepts
            ``"cosine"`` only.
        num_classes: number of logits, at least 2.
        in_channels: number of image channels, at least 1.
        width: channel multiplier applied to every conv layer, above 0.
        batch_norm: whether a BatchNorm layer follows each conv.
        mean: per-channel mean of the dataset in ``[0, 1]`` pixel units, one value
            or one per channel; ``None`` means 0.5.
        std: per-channel standard deviation, given like ``mean``. ``None`` means
            0.5.
        arch_kwargs: further keyword arguments of the architecture, for example
            ``{"head": "fc"}`` for ``cnn9``.
        **operator_kwargs: further ``DecoupledConv2d`` arguments such as
            ``weighting``, ``alpha`` or ``radius``.

    Returns:
        A model that maps ``(N, in_channels, H, W)`` images in ``[0, 1]`` to
        ``(N, num_classes)`` logits. It normalizes the input itself.

    Raises:
        ValueError: for an unknown architecture, operator or angular name, for
            out-of-range sizes, or for invalid ``mean``/``std``.
        TypeError: for operator arguments that ``DecoupledConv2d`` does not accept.
    """
    arch = check_choice("architecture", arch, list_architectures())
    conv = ConvFactory(operator, angular, operator_kwargs)
    check_model_size(num_classes, in_channels, width)

    model = MODELS[arch](
        conv,
        num_classes=num_classes,
        in_channels=in_channels,
        width=width,
        batch_norm=batch_norm,
        mean=mean,
        std=std,
        **dict(arch_kwargs or {}),
    )
    logger.debug("built %s with %r: %d parameters", arch, conv, count_parameters(model))
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameter elements of ``model``.

    With ``trainable_only`` the count skips parameters with ``requires_grad=False``.
    Buffers (BatchNorm statistics, a radius with ``learn_radius=False``) are never
    counted.
    """
    return sum(
        parameter.numel()
        for parameter in model.parameters()
        if parameter.requires_grad or not trainable_only
    )
