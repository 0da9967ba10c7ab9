"""The embedded ``mnist-sample`` dataset: a fixed subset of real MNIST.

The sample contains the first 10,000 images of the official MNIST training set and the
first 2,000 images of the official test set, unchanged and in file order, so that the
first command works offline. It ships as ``assets/mnist-sample.npz``, a zip archive
of four deflate-compressed ``.npy`` arrays:

- ``train_images``: uint8 (10000, 28, 28), ``train_labels``: uint8 (10000,)
- ``test_images``: uint8 (2000, 28, 28), ``test_labels``: uint8 (2000,)

The archive's SHA-256 digest is checked on every load. ``scripts/make_mnist_sample.py``
rebuilds the archive from the official MNIST files.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from robustdc.data.errors import (
    DatasetChecksumError,
    DatasetFormatError,
    DatasetNotFoundError,
)

logger = logging.getLogger(__name__)

SAMPLE_NAME = "mnist-sample"
SAMPLE_ASSET = Path(__file__).resolve().parent / "assets" / "mnist-sample.npz"
# Digest of the archive that scripts/make_mnist_sample.py writes; update it whenever
# the script changes the archive's bytes.
SAMPLE_SHA256 = "1b974711cf09770ed59a2a0d345ff1ca68bf2c937acafd007d8bb6a29921f569"
SAMPLE_SIZES: dict[str, int] = {"train": 10_000, "test": 2_000}

# A fixed timestamp keeps the archive bytes, and so its digest, reproducible.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


def file_sha256(data: bytes) -> str:
    """Return the hexadecimal SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def write_sample_archive(path: Path, arrays: Mapping[str, np.ndarray]) -> str:
    """Write ``arrays`` as an ``.npz`` archive whose bytes depend only on the arrays.

    ``np.savez_compressed`` stamps each member with the current time, so the archive
    is assembled by hand with a fixed timestamp and sorted member names.

    Returns:
        The SHA-256 digest of the written file.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue(), compresslevel=9)
    data = buffer.getvalue()
    path.write_bytes(data)
    return file_sha256(data)


def load_sample(split: str, path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of the embedded sample after checking the archive's digest.

    Args:
        split: ``"train"`` or ``"test"``; the caller validates it.
        path: the archive; defaults to the shipped :data:`SAMPLE_ASSET`.

    Returns:
        Images uint8 (N, 28, 28, 1) and labels int64 (N,).

    Raises:
        DatasetNotFoundError: the archive is missing (a broken installation).
        DatasetChecksumError: the archive's SHA-256 digest differs from
            :data:`SAMPLE_SHA256`.
    """
    path = SAMPLE_ASSET if path is None else path
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise DatasetNotFoundError(
            f"embedded sample {path} is missing; reinstall robustdc",
            name=SAMPLE_NAME,
            data_dir=path.parent,
            expected_files=[path.name],
            searched=[path.parent],
        ) from err

    digest = file_sha256(data)
    if digest != SAMPLE_SHA256:
        raise DatasetChecksumError(
            f"embedded sample {path} is corrupt: SHA-256 is {digest}, expected "
            f"{SAMPLE_SHA256}; reinstall robustdc or rebuild the file with "
            "scripts/make_mnist_sample.py"
        )

    keys = (f"{split}_images", f"{split}_labels")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            images, labels = (archive[key] for key in keys)
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise DatasetFormatError(
            f"embedded sample {path} lacks readable arrays {keys}: {err}"
        ) from err

    logger.debug("loaded %d %s images from %s", len(images), split, path)
    return images[..., np.newaxis], labels.astype(np.int64)
