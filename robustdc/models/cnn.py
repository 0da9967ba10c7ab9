"""CNN-9: the plain nine-layer convolutional network of the decoupled-network paper.

Liu et al., "Decoupled Networks", CVPR 2018, run their adversarial experiments on this
network without BatchNorm. Three stages of three 3x3 conv layers (64, 128 and 256
channels at ``width=1``) are separated by 2x2 max pooling, and a head maps the last
feature map to logits.
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
from robustdc.models.validation import check_choice, check_model_size

#: Conv channels per stage at ``width=1``.
CNN9_WIDTHS = (64, 128, 256)
#: Size of the hidden fully connected layer of the ``fc`` head.
FC_HEAD_FEATURES = 256
HEADS = ("pool", "fc")


@register("cnn9")
class CNN9(nn.Module):
    """Nine 3x3 conv layers in three stages, then global average pooling and a head.

    Layout: ``normalize -> stage1 (3 convs) -> maxpool -> stage2 (3 convs) -> maxpool
    -> stage3 (3 convs) -> global average pool -> head``. Each conv is followed by
    BatchNorm (if ``batch_norm``) and ReLU. The ``pool`` head is one ``nn.Linear``
    classifier. The ``fc`` head inserts a 256-unit linear layer and a ReLU before the
    classifier. Because it comes after the global pooling, it works for any input size.

    Args:
        conv: creates the conv layers for one operator.
        num_classes: number of logits.
        in_channels: number of image channels.
        width: multiplier of the stage widths 64/128/256.
        batch_norm: whether BatchNorm follows each conv.
        mean, std: per-channel input statistics for :class:`Normalize`.
        head: ``"pool"`` or ``"fc"``.

    Shape:
        - Input: ``(N, in_channels, H, W)`` in ``[0, 1]``, with ``H, W >= 4``.
        - Output: ``(N, num_classes)`` logits.
    """

    def __init__(
        self,
        conv: ConvFactory,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        batch_norm: bool = True,
        mean: ChannelStats = None,
        std: ChannelStats = None,
        head: str = "pool",
    ) -> None:
        super().__init__()
        check_model_size(num_classes, in_channels, width)
        self.head = check_choice("cnn9 head", head, HEADS)
        widths = [scaled_channels(channels, width) for channels in CNN9_WIDTHS]

        self.normalize = Normalize(in_channels, mean, std)
        self.stage1 = conv_stage(conv, in_channels, [widths[0]] * 3, batch_norm)
        self.pool1 = nn.MaxPool2d(2)
        self.stage2 = conv_stage(conv, widths[0], [widths[1]] * 3, batch_norm)
        self.pool2 = nn.MaxPool2d(2)
        self.stage3 = conv_stage(conv, widths[1], [widths[2]] * 3, batch_norm)
        self.global_pool = nn.AdaptiveAvgPool2d(1)

        if self.head == "fc":
            self.fc = nn.Sequential(nn.Linear(widths[2], FC_HEAD_FEATURES), nn.ReLU(inplace=False))
            self.classifier = nn.Linear(FC_HEAD_FEATURES, num_classes)
        else:
            self.fc = nn.Identity()
            self.classifier = nn.Linear(widths[2], num_classes)

        init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to the classifier input ``(N, D)``."""
        x = self.normalize(x)
        x = self.pool1(self.stage1(x))
        x = self.pool2(self.stage2(x))
        x = self.stage3(x)
        x = self.global_pool(x).flatten(1)  # (N, 256 * width)
        return self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
