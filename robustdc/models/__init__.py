"""Architectures for decoupled networks, each buildable with any operator.

``build_model(arch, operator, ...)`` returns a classifier whose conv layers are all
``nn.Conv2d`` (``operator="baseline"``) or all ``robustdc.ops.DecoupledConv2d`` with
the operator's magnitude function. Linear layers stay ``nn.Linear``. Every model takes
images in ``[0, 1]``, normalizes them with per-channel statistics stored as buffers,
and returns logits.

Example::

    from robustdc.models import build_model

    # CIFAR-10 per-channel mean and standard deviation.
    model = build_model("cnn9", "tanhconv", num_classes=10, in_channels=3,
                        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
"""

# Importing the architecture modules registers them in MODELS.
from robustdc.models.cnn import CNN9
from robustdc.models.layers import BASELINE, ConvFactory, list_operators
from robustdc.models.mnist2d import MNIST2D
from robustdc.models.normalize import Normalize
from robustdc.models.registry import (
    MODELS,
    build_model,
    count_parameters,
    list_architectures,
    register,
)
from robustdc.models.resnet import BasicBlock, ResNet

__all__ = [
    "BASELINE",
    "CNN9",
    "MNIST2D",
    "MODELS",
    "BasicBlock",
    "ConvFactory",
    "Normalize",
    "ResNet",
    "build_model",
    "count_parameters",
    "list_architectures",
    "list_operators",
    "register",
]
