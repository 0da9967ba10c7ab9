"""The MNIST network with a 2-d feature layer, for pictures of the learned features.

Six 3x3 conv layers (32, 32, 64, 64, 128, 128 channels at ``width=1``) with 2x2 max
pooling after each pair, a 256-unit linear layer, a linear layer to a 2-d feature and a
linear classifier on that feature. Plotting the 2-d features of the test set shows how
each operator separates the classes (the 2D-feature figures of Liu et al., "Decoupled
Networks", CVPR 2018).
"""

from __future__ import annotations

from torch import Tensor, nn

from robustdc.models.layers import (
    ConvFactory,
    conv_stage,
    init_weights,
    scaled_channels,
)
from robustdc.models.normalize import ChannelStats, Normalize
from robustdc.models.registry import register
from robustdc.models.validation import check_model_size

#: Conv channels per pair of conv layers at ``width=1``.
MNIST2D_WIDTHS = (32, 64, 128)
HIDDEN_FEATURES = 256
FEATURE_DIM = 2
# Spatial size after three 2x2 poolings of a 28x28 image. Other sizes are average-pooled
# to it, so the first linear layer has the same shape for every input size.
POOLED_SIZE = 3


@register("mnist2d")
class MNIST2D(nn.Module):
    """Six conv layers, then linear layers down to a 2-d feature and the classifier.

    Layout: ``normalize -> [conv, conv, maxpool] x 3 -> adaptive average pool to 3x3 ->
    flatten -> linear 256 -> ReLU -> linear 2 (features) -> linear classifier``. For
    28x28 inputs the adaptive pooling is the identity. The 2-d feature has no
    activation, so it can take any sign. The classifier keeps its bias.

    Args:
        conv: creates the conv layers for one operator.
        num_classes: number of logits.
        in_channels: number of image channels.
        width: multiplier of the conv widths 32/64/128; the linear layers keep 256
            and 2 units.
        batch_norm: whether BatchNorm follows each conv.
        mean, std: per-channel input statistics for :class:`Normalize`.

    Shape:
        - Input: ``(N, in_channels, H, W)`` in ``[0, 1]``, with ``H, W >= 8``.
        - Output: ``(N, num_classes)`` logits; :meth:`features` gives ``(N, 2)``.
    """

    def __init__(
        self,
        conv: ConvFactory,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        width: float = 1.0,
        batch_norm: bool = True,
        mean: ChannelStats = None,
        std: ChannelStats = None,
    ) -> None:
        super().__init__()
        check_model_size(num_classes, in_channels, width)
        widths = [scaled_channels(channels, width) for channels in MNIST2D_WIDTHS]

        self.normalize = Normalize(in_channels, mean, std)
        self.stage1 = conv_stage(conv, in_channels, [widths[0]] * 2, batch_norm)
        self.stage2 = conv_stage(conv, widths[0], [widths[1]] * 2, batch_norm)
        self.stage3 = conv_stage(conv, widths[1], [widths[2]] * 2, batch_norm)
        self.pool = nn.MaxPool2d(2)
        self.resize = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.fc1 = nn.Linear(widths[2] * POOLED_SIZE * POOLED_SIZE, HIDDEN_FEATURES)
        self.relu = nn.ReLU(inplace=False)
        self.fc2 = nn.Linear(HIDDEN_FEATURES, FEATURE_DIM)
        self.classifier = nn.Linear(FEATURE_DIM, num_classes)

        init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to their 2-d features ``(N, 2)``."""
        x = self.normalize(x)
        x = self.pool(self.stage1(x))
        x = self.pool(self.stage2(x))
        x = self.pool(self.stage3(x))
        x = self.resize(x).flatten(1)  # (N, 128 * width * 3 * 3)
        x = self.relu(self.fc1(x))
        return self.fc2(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
