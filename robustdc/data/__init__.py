"""Datasets for robustdc: MNIST, Fashion-MNIST, CIFAR-10/100 and an embedded sample.

Datasets are read from their official file formats in a data directory (the
``data_dir`` argument, else ``$ROBUSTDC_DATA``, else ``~/.cache/robustdc/data``) and
downloaded with torchvision when missing. ``mnist-sample``, the default, is a real
MNIST subset shipped inside the package, so it works offline.

This package imports nothing else from robustdc.

Example::

    from robustdc.data import load_dataset
    train = load_dataset("cifar10", "train", augment=True)
    image, label = train[0]  # float32 (3, 32, 32) in [0, 1], int
"""

from robustdc.data.dataset import (
    AUGMENTED_DATASETS,
    ImageDataset,
    load_dataset,
    random_crop_flip,
)
from robustdc.data.errors import (
    DatasetChecksumError,
    DatasetFormatError,
    DatasetNotFoundError,
)
from robustdc.data.loading import clear_cache, load_arrays
from robustdc.data.locate import DATA_DIR_ENV, resolve_data_dir
from robustdc.data.registry import (
    DATASETS,
    DEFAULT_DATASET,
    SPLITS,
    DatasetInfo,
    get_info,
)

__all__ = [
    "AUGMENTED_DATASETS",
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_DATASET",
    "SPLITS",
    "DatasetChecksumError",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageDataset",
    "clear_cache",
    "get_info",
    "load_arrays",
    "load_dataset",
    "random_crop_flip",
    "resolve_data_dir",
]
