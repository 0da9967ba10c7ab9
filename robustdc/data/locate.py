"""Find dataset files in the data directory, downloading them when missing.

The data directory is the ``data_dir`` argument, else the environment variable
``ROBUSTDC_DATA``, else ``~/.cache/robustdc/data``. Inside it, each dataset is looked
up in its own folder first, then in the folder torchvision creates:

- ``mnist``: ``mnist/``, ``MNIST/raw/``
- ``fashion-mnist``: ``fashion-mnist/``, ``FashionMNIST/raw/``
- ``cifar10``: the binary version in ``cifar10/cifar-10-batches-bin/``,
  ``cifar-10-batches-bin/`` or ``cifar10/``, else the python version in
  ``cifar10/cifar-10-batches-py/``, ``cifar-10-batches-py/`` or ``cifar10/``
- ``cifar100``: the same pattern with ``cifar100/``, ``cifar-100-binary/`` and
  ``cifar-100-python/``

Downloads go through torchvision into the data directory and therefore land in
torchvision's folders (``MNIST/raw/``, ``cifar-10-batches-py/``, ...).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from robustdc.data.errors import DatasetNotFoundError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "ROBUSTDC_DATA"
DEFAULT_DATA_DIR = Path("~/.cache/robustdc/data")

FileFormat = Literal["idx", "cifar-binary", "cifar-python"]

_IDX_FOLDERS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST/raw"),
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"),
}

_CIFAR_FOLDERS: dict[str, dict[FileFormat, tuple[str, ...]]] = {
    "cifar10": {
        "cifar-binary": ("cifar10/cifar-10-batches-bin", "cifar-10-batches-bin", "cifar10"),
        "cifar-python": ("cifar10/cifar-10-batches-py", "cifar-10-batches-py", "cifar10"),
    },
    "cifar100": {
        "cifar-binary": ("cifar100/cifar-100-binary", "cifar-100-binary", "cifar100"),
        "cifar-python": ("cifar100/cifar-100-python", "cifar-100-python", "cifar100"),
    },
}

_TORCHVISION_CLASSES = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
}

CIFAR10_TRAIN_BATCHES = 5


@dataclass(frozen=True)
class DataFiles:
    """The files that hold one split of a dataset.

    Attributes:
        name: dataset name.
        split: ``"train"`` or ``"test"``.
        format: how to decode the files.
        paths: for ``"idx"`` the image file then the label file; for the CIFAR
            formats the batch files, in order.
    """

    name: str
    split: str
    format: FileFormat
    paths: tuple[Path, ...]


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory: ``data_dir``, else ``$ROBUSTDC_DATA``, else
    ``~/.cache/robustdc/data``.

    An empty string counts as unset. ``~`` is expanded. The folder is not created.
    """
    if data_dir is not None and os.fspath(data_dir):
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def _idx_file_names(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _cifar_file_names(name: str, file_format: FileFormat, split: str) -> list[str]:
    suffix = ".bin" if file_format == "cifar-binary" else ""
    if name == "cifar100":
        return [f"{split}{suffix}"]
    if split == "test":
        return [f"test_batch{suffix}"]
    return [f"data_batch_{index}{suffix}" for index in range(1, CIFAR10_TRAIN_BATCHES + 1)]


def _find_idx(name: str, split: str, data_dir: Path) -> DataFiles | None:
    for folder in _IDX_FOLDERS[name]:
        found = []
        for file_name in _idx_file_names(split):
            # Prefer the gzipped file, as distributed, and accept it uncompressed too.
            candidates = [data_dir / folder / f"{file_name}.gz", data_dir / folder / file_name]
            path = next((path for path in candidates if path.is_file()), None)
            if path is None:
                break
            found.append(path)
        else:
            return DataFiles(name, split, "idx", tuple(found))
    return None


def _find_cifar(name: str, split: str, data_dir: Path) -> DataFiles | None:
    # The binary version is preferred because reading it needs no unpickling. A
    # CIFAR-10 training set may be partial: any present subset of the five batches
    # is used, and the loader logs which.
    for file_format, folders in _CIFAR_FOLDERS[name].items():
        for folder in folders:
            names = _cifar_file_names(name, file_format, split)
            present = [
                data_dir / folder / file_name
                for file_name in names
                if (data_dir / folder / file_name).is_file()
            ]
            if present:
                return DataFiles(name, split, file_format, tuple(present))
    return None


def find_files(name: str, split: str, data_dir: Path) -> DataFiles | None:
    """Return the files of ``split`` of dataset ``name`` in ``data_dir``, or None.

    ``name`` and ``split`` must already be validated; ``name`` is one of the
    downloadable datasets (not ``mnist-sample``).
    """
    if name in _IDX_FOLDERS:
        return _find_idx(name, split, data_dir)
    return _find_cifar(name, split, data_dir)


def describe_expected_files(
    name: str, split: str, data_dir: Path
) -> tuple[str, list[str], list[Path]]:
    """Describe the files that :func:`find_files` looks for.

    Returns:
        A phrase for error messages, the expected file names, and the searched folders.
    """
    if name in _IDX_FOLDERS:
        file_names = [f"{file_name}.gz" for file_name in _idx_file_names(split)]
        folders = [data_dir / folder for folder in _IDX_FOLDERS[name]]
        phrase = f"{' and '.join(file_names)} (gzipped or uncompressed) in one of: " + ", ".join(
            str(folder) for folder in folders
        )
        return phrase, file_names, folders

    quantifier = "at least one of " if name == "cifar10" and split == "train" else ""
    phrases = []
    all_names: list[str] = []
    all_folders: list[Path] = []
    for file_format, relative_folders in _CIFAR_FOLDERS[name].items():
        file_names = _cifar_file_names(name, file_format, split)
        folders = [data_dir / folder for folder in relative_folders]
        version = "binary" if file_format == "cifar-binary" else "python"
        phrases.append(
            f"the {version} version ({quantifier}{', '.join(file_names)}) in one of: "
            + ", ".join(str(folder) for folder in folders)
        )
        all_names += file_names
        all_folders += folders
    return " or ".join(phrases), all_names, all_folders


def download_with_torchvision(name: str, split: str, data_dir: Path) -> None:
    """Download ``split`` of dataset ``name`` into ``data_dir`` with torchvision.

    Raises:
        OSError, RuntimeError: as raised by torchvision when a download fails (for
            example without network access).
    """
    import torchvision.datasets  # deferred because only downloads need torchvision

    dataset_class = getattr(torchvision.datasets, _TORCHVISION_CLASSES[name])
    data_dir.mkdir(parents=True, exist_ok=True)
    dataset_class(root=str(data_dir), train=split == "train", download=True)


def locate_files(name: str, split: str, data_dir: Path, download: bool = True) -> DataFiles:
    """Return the files of ``split`` of ``name``, downloading them if missing.

    Raises:
        DatasetNotFoundError: the files are missing and ``download`` is False, the
            download failed, or the download did not produce the expected files.
    """
    files = find_files(name, split, data_dir)
    if files is not None:
        return files

    cause: BaseException | None = None
    if not download:
        outcome = "Downloading is disabled (download=False)."
    else:
        logger.info(
            "%s %s split not found in %s; downloading it with torchvision", name, split, data_dir
        )
        try:
            download_with_torchvision(name, split, data_dir)
        except (OSError, RuntimeError) as err:
            logger.warning("downloading %s into %s failed: %s", name, data_dir, err)
            cause = err
            outcome = f"Downloading with torchvision failed: {err}."
        else:
            files = find_files(name, split, data_dir)
            if files is not None:
                return files
            outcome = "torchvision finished downloading, but the expected files are still missing."

    phrase, file_names, folders = describe_expected_files(name, split, data_dir)
    message = (
        f"dataset {name!r} ({split} split) not found in data directory {data_dir}: "
        f"expected {phrase}. {outcome} To fix, put the official files in one of "
        f"those folders, or point --data-dir or the {DATA_DIR_ENV} environment "
        "variable at a directory that contains them."
    )
    raise DatasetNotFoundError(
        message,
        name=name,
        data_dir=data_dir,
        expected_files=file_names,
        searched=folders,
    ) from cause
