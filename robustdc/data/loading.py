"""Decode dataset files into numpy arrays and keep them in memory.

:func:`load_arrays` returns numpy arrays: images uint8 of shape (N, H, W, C) and
labels int64 of shape (N,). Decoded arrays are cached per dataset, split and file
(path, size and modification time), so repeated calls are free and a replaced file is
read again. The cached arrays are read-only because every caller shares them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from robustdc.data import sample
from robustdc.data.errors import DatasetFormatError
from robustdc.data.formats import read_cifar_binary, read_cifar_pickle, read_idx_pair
from robustdc.data.locate import (
    CIFAR10_TRAIN_BATCHES,
    DataFiles,
    locate_files,
    resolve_data_dir,
)
from robustdc.data.registry import DatasetInfo, check_split, get_info

logger = logging.getLogger(__name__)

Arrays = tuple[np.ndarray, np.ndarray]
_CacheKey = tuple[object, ...]

_cache: dict[_CacheKey, Arrays] = {}


def clear_cache() -> None:
    """Drop every decoded array kept in memory."""
    _cache.clear()


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _decode_cifar(files: DataFiles) -> Arrays:
    parts = []
    for path in files.paths:
        if files.format == "cifar-binary":
            if files.name == "cifar100":
                parts.append(read_cifar_binary(path, label_bytes=2, label_index=1))
            else:
                parts.append(read_cifar_binary(path))
        else:
            label_key = "fine_labels" if files.name == "cifar100" else "labels"
            parts.append(read_cifar_pickle(path, label_key))

    if files.name == "cifar10" and files.split == "train":
        batch_names = ", ".join(path.name for path in files.paths)
        logger.info(
            "cifar10 train split: using %d of %d batches (%s) from %s",
            len(files.paths),
            CIFAR10_TRAIN_BATCHES,
            batch_names,
            files.paths[0].parent,
        )
        if len(files.paths) < CIFAR10_TRAIN_BATCHES:
            logger.warning(
                "cifar10 train split is partial: only %s found in %s, so it has "
                "%d instead of 50000 images",
                batch_names,
                files.paths[0].parent,
                sum(len(labels) for _, labels in parts),
            )

    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    return images, labels


def _decode(files: DataFiles) -> Arrays:
    if files.format == "idx":
        images_path, labels_path = files.paths
        return read_idx_pair(images_path, labels_path)
    return _decode_cifar(files)


def _check_arrays(images: np.ndarray, labels: np.ndarray, info: DatasetInfo, source: str) -> None:
    expected_shape = (info.image_size, info.image_size, info.in_channels)
    if images.shape[1:] != expected_shape:
        raise DatasetFormatError(
            f"{source}: expected {info.name} images of shape (N, "
            f"{', '.join(map(str, expected_shape))}), got {images.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DatasetFormatError(
            f"{source}: labels must be in [0, {info.num_classes - 1}] for "
            f"{info.name}, got values from {labels.min()} to {labels.max()}"
        )


def load_arrays(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Arrays:
    """Load one split of a dataset as numpy arrays.

    Args:
        name: a key of :data:`robustdc.data.DATASETS`, e.g. ``"mnist"``.
        split: ``"train"`` or ``"test"``.
        data_dir: the data directory; see :func:`resolve_data_dir`. Ignored for
            ``mnist-sample``, which ships inside the package.
        download: download missing files with torchvision. With False, missing
            files raise at once and the network is never used.

    Returns:
        ``(images, labels)``: read-only images uint8 (N, H, W, C) with values 0-255,
        and read-only labels int64 (N,). Copy them before modifying.

    Raises:
        ValueError: unknown ``name`` or ``split``.
        DatasetNotFoundError: the files are missing and could not be downloaded.
        DatasetFormatError: a file is corrupt or not in the official format.
    """
    info = get_info(name)
    check_split(split)

    load: Callable[[], Arrays]
    if name == sample.SAMPLE_NAME:
        asset = sample.SAMPLE_ASSET
        key: _CacheKey = (name, split, _file_key(asset) if asset.exists() else str(asset))
        source = str(asset)

        def load() -> Arrays:
            return sample.load_sample(split, asset)

    else:
        files = locate_files(name, split, resolve_data_dir(data_dir), download=download)
        key = (name, split, tuple(_file_key(path) for path in files.paths))
        source = ", ".join(str(path) for path in files.paths)

        def load() -> Arrays:
            return _decode(files)

    cached = _cache.get(key)
    if cached is not None:
        return cached

    images, labels = load()
    _check_arrays(images, labels, info, source)
    images.flags.writeable = False
    labels.flags.writeable = False
    logger.debug("decoded %d %s %s images from %s", len(images), name, split, source)
    _cache[key] = (images, labels)
    return images, labels
