"""In-memory torch datasets and the CIFAR training augmentation.

Items are ``(image, label)``: image float32 of shape (C, H, W) with values in [0, 1],
label a Python ``int``. Images are not normalized, because models normalize inside
with the constants in :class:`~robustdc.data.registry.DatasetInfo`.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from robustdc.data.loading import load_arrays
from robustdc.data.registry import DatasetInfo, check_split, get_info

# Standard CIFAR training augmentation: pad 4 zero pixels on each side, crop a random
# 32x32 window, flip horizontally with probability 0.5. The MNIST-style datasets get
# none, because a mirrored digit is a different or invalid symbol.
AUGMENTED_DATASETS: tuple[str, ...] = ("cifar10", "cifar100")
AUGMENT_PADDING = 4


def random_crop_flip(
    images: torch.Tensor,
    padding: int = AUGMENT_PADDING,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero-pad, randomly crop back to the input size, and randomly flip a batch.

    Each image gets its own crop offset and flip. Any dtype and device work. The
    random numbers come from ``generator`` (a CPU generator) or torch's global one.

    Args:
        images: (N, C, H, W).
        padding: zero pixels added on each side before cropping.
        flip: flip each image left-right with probability 0.5.
        generator: optional CPU random generator, for reproducible crops.

    Returns:
        A new tensor of the same shape, dtype and device as ``images``.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")

    count, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (N, C, H+2p, W+2p)

    top = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator)
    rows = top + torch.arange(height)  # (N, H): source row of each output row
    columns = left + torch.arange(width)  # (N, W)
    if flip:
        flipped = torch.rand(count, generator=generator) < 0.5
        columns = torch.where(flipped[:, None], columns.flip(1), columns)

    device = images.device
    batch_index = torch.arange(count, device=device)[:, None, None]
    rows = rows.to(device)[:, :, None]
    columns = columns.to(device)[:, None, :]
    # Advanced indexing over (N, H+2p, W+2p) gives (N, H, W, C).
    cropped = padded.permute(0, 2, 3, 1)[batch_index, rows, columns]
    return cropped.permute(0, 3, 1, 2).contiguous()


def _crop_flip_one(image: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    # random_crop_flip for one (C, H, W) image. Basic slicing instead of advanced
    # indexing makes it several times faster per item.
    height, width = image.shape[-2:]
    top, left = torch.randint(0, 2 * padding + 1, (2,)).tolist()
    padded = F.pad(image, (padding, padding, padding, padding))
    cropped = padded[:, top : top + height, left : left + width]
    if flip and torch.rand(()).item() < 0.5:
        cropped = cropped.flip(-1)
    return cropped


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Image classification dataset held in memory as uint8.

    Args:
        images: uint8 array (N, H, W, C); copied into :attr:`images`.
        labels: integer array (N,); copied into :attr:`labels`.
        info: the dataset description.
        augment: apply :func:`random_crop_flip` to every item.

    Attributes:
        info: the dataset description.
        images: uint8 tensor (N, C, H, W).
        labels: int64 tensor (N,).
        augment: whether :meth:`__getitem__` augments.

    Augmentation draws from torch's global generator, which a ``DataLoader`` seeds
    differently in each worker.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        info: DatasetInfo,
        augment: bool = False,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"got {len(images)} images but {len(labels)} labels")
        self.info = info
        self.images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]  # (C, H, W) uint8
        if self.augment:
            image = _crop_flip_one(image, AUGMENT_PADDING, flip=True)
        return image.float().div_(255.0), int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.info.name!r}, size={len(self)}, "
            f"augment={self.augment})"
        )


def load_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    augment: bool = False,
    limit: int | None = None,
) -> ImageDataset:
    """Load one split of a dataset as a torch dataset.

    Args:
        name: a key of :data:`robustdc.data.DATASETS`, e.g. ``"cifar10"``.
        split: ``"train"`` or ``"test"``.
        data_dir: the data directory; see :func:`robustdc.data.resolve_data_dir`.
        download: download missing files with torchvision.
        augment: apply the standard CIFAR training augmentation (4-pixel zero pad,
            random 32x32 crop, random horizontal flip). Only for the train split of
            ``cifar10`` and ``cifar100``.
        limit: keep only the first ``limit`` examples (all of them if fewer).

    Returns:
        An :class:`ImageDataset` of (float32 image (C, H, W) in [0, 1], int label).

    Raises:
        ValueError: unknown ``name`` or ``split``, ``limit`` < 1, or ``augment``
            requested for a dataset or split without augmentation.
        TypeError: ``limit`` is not an integer.
        DatasetNotFoundError: the files are missing and could not be downloaded.
    """
    info = get_info(name)
    check_split(split)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, numbers.Integral):
            raise TypeError(f"limit must be an integer or None, got {limit!r}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if augment and name not in AUGMENTED_DATASETS:
        raise ValueError(
            f"augment=True is defined only for {', '.join(AUGMENTED_DATASETS)}, "
            f"got dataset {name!r}"
        )
    if augment and split != "train":
        raise ValueError(f"augment=True is only for the train split, got {split!r}")

    images, labels = load_arrays(name, split, data_dir=data_dir, download=download)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return ImageDataset(images, labels, info, augment=augment)
