"""Residual networks for small images: ResNet-32 (CIFAR layout) and ResNet-18.

Both use the basic block of He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016: two 3x3 conv layers and a shortcut, with ReLU after the sum. Where a block
changes the width or the resolution, the shortcut is a strided 1x1 conv and BatchNorm
(projection shortcut, option B of that paper). That 1x1 conv comes from the same
operator as the other layers, so a decoupled network has no plain conv anywhere.

Both networks start with a 3x3 stride-1 stem conv and no max pooling, which keeps the
resolution of 32x32 (CIFAR) and 28x28 (MNIST) inputs. The ImageNet ResNet-18 starts
with a 7x7 stride-2 conv and max pooling instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from robustdc.models.layers import ConvFactory, init_weights, scaled_channels
from robustdc.models.normalize import ChannelStats, Normalize
from robustdc.models.registry import register
from robustdc.models.validation import check_model_size

#: ResNet-32: three stages of five blocks, 96/192/384 channels at ``width=1``.
RESNET32_WIDTHS = (96, 192, 384)
RESNET32_BLOCKS = (5, 5, 5)
#: ResNet-18: four stages of two blocks, 64/128/256/512 channels at ``width=1``.
RESNET18_WIDTHS = (64, 128, 256, 512)
RESNET18_BLOCKS = (2, 2, 2, 2)


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 conv layers and a shortcut ``s``, summed before the last ReLU.

    The output is ``relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x))``.

    The shortcut ``s`` is the identity when the shape is unchanged, else a 1x1 conv with
    the block's stride followed by BatchNorm. Without BatchNorm every ``bn`` is
    ``nn.Identity`` and the convs have a bias.
    """

    def __init__(
        self,
        conv: ConvFactory,
        in_channels: int,
        out_channels: int,
        stride: int,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        bias = not batch_norm
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = _norm(out_channels, batch_norm)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=bias)
        self.bn2 = _norm(out_channels, batch_norm)
        self.relu2 = nn.ReLU(inplace=False)

        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, bias=bias),
                _norm(out_channels, batch_norm),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """A stem conv, stages of :class:`BasicBlock`, global average pooling, a classifier.

    The stem is a 3x3 stride-1 conv to the first stage width, followed by BatchNorm (if
    ``batch_norm``) and ReLU. The first stage keeps the resolution and every later stage
    halves it in its first block.

    Args:
        conv: creates the conv layers for one operator.
        stage_widths: channels of each stage at ``width=1``.
        blocks_per_stage: number of blocks in each stage.
        num_classes: number of logits.
        in_channels: number of image channels.
        width: multiplier of ``stage_widths``.
        batch_norm: whether BatchNorm follows each conv.
        mean, std: per-channel input statistics for :class:`Normalize`.

    Shape:
        - Input: ``(N, in_channels, H, W)`` in ``[0, 1]``.
        - Output: ``(N, num_classes)`` logits.
    """

    def __init__(
        self,
        conv: ConvFactory,
        stage_widths: Sequence[int],
        blocks_per_stage: Sequence[int],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        batch_norm: bool = True,
        mean: ChannelStats = None,
        std: ChannelStats = None,
    ) -> None:
        super().__init__()
        check_model_size(num_classes, in_channels, width)
        if len(stage_widths) != len(blocks_per_stage) or not stage_widths:
            raise ValueError(
                "stage_widths and blocks_per_stage must be non-empty and of equal "
                f"length, got {list(stage_widths)} and {list(blocks_per_stage)}"
            )
        widths = [scaled_channels(channels, width) for channels in stage_widths]

        self.normalize = Normalize(in_channels, mean, std)
        self.stem = nn.Sequential(
            conv(in_channels, widths[0], 3, padding=1, bias=not batch_norm),
            _norm(widths[0], batch_norm),
            nn.ReLU(inplace=False),
        )

        stages = []
        channels = widths[0]
        for index, (out_channels, num_blocks) in enumerate(
            zip(widths, blocks_per_stage, strict=True)
        ):
            blocks = []
            for block_index in range(num_blocks):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(conv, channels, out_channels, stride, batch_norm))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

        init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to the classifier input ``(N, D)``."""
        x = self.stem(self.normalize(x))
        x = self.stages(x)
        return self.global_pool(x).flatten(1)  # (N, last stage width)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register("resnet32")
def resnet32(conv: ConvFactory, **kwargs: object) -> ResNet:
    """Build the CIFAR ResNet-32: 3 stages of 5 blocks, 96/192/384 channels.

    ``kwargs`` are the keyword arguments of :class:`ResNet`.
    """
    return ResNet(conv, RESNET32_WIDTHS, RESNET32_BLOCKS, **kwargs)  # type: ignore[arg-type]


@register("resnet18")
def resnet18(conv: ConvFactory, **kwargs: object) -> ResNet:
    """Build ResNet-18 with a 3x3 stem: 4 stages of 2 blocks, 64/128/256/512 channels.

    ``kwargs`` are the keyword arguments of :class:`ResNet`.
    """
    return ResNet(conv, RESNET18_WIDTHS, RESNET18_BLOCKS, **kwargs)  # type: ignore[arg-type]
