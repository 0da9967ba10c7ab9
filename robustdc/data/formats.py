"""Readers for the official file formats of MNIST-style and CIFAR datasets.

Every reader decodes a whole file with ``np.frombuffer`` and returns
``(images, labels)``: images uint8 of shape (N, H, W, C), labels int64 of shape (N,).

Formats:
- IDX (MNIST, Fashion-MNIST): a 4-byte magic number (two zero bytes, the type code
  0x08 for unsigned bytes, the number of dimensions), one big-endian uint32 per
  dimension, then the values in row-major order. Files may be gzipped.
- CIFAR binary version: fixed-size records of label byte(s) followed by 3,072 pixel
  bytes (1,024 red, 1,024 green, 1,024 blue, each 32x32 row-major). CIFAR-10 has one
  label byte; CIFAR-100 has two (coarse, then fine).
- CIFAR python version: a pickled dict with ``data`` (uint8 array (N, 3072), same
  pixel order as the binary version) and ``labels`` (CIFAR-10) or ``fine_labels``
  (CIFAR-100). The official files were written by Python 2, so ``str`` values load as
  ``bytes``.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from robustdc.data.errors import DatasetFormatError

CIFAR_IMAGE_SIZE = 32
CIFAR_PIXELS = 3 * CIFAR_IMAGE_SIZE * CIFAR_IMAGE_SIZE

_IDX_UNSIGNED_BYTE = 0x08


def read_file_bytes(path: Path) -> bytes:
    """Return the contents of ``path``, decompressed when its name ends in ``.gz``."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetFormatError(f"{path}: invalid gzip data ({err})") from err


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Decode an IDX file of unsigned bytes with ``ndim`` dimensions.

    Returns a read-only uint8 array that shares memory with the file contents.

    Raises:
        DatasetFormatError: the header is not an unsigned-byte IDX header with
            ``ndim`` dimensions, or the data length differs from the header's shape.
    """
    data = read_file_bytes(path)
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetFormatError(
            f"{path}: file is {len(data)} bytes, shorter than the {header_size}-byte IDX header"
        )
    if data[0:2] != b"\x00\x00" or data[2] != _IDX_UNSIGNED_BYTE or data[3] != ndim:
        raise DatasetFormatError(
            f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s); "
            f"expected magic 00 00 08 {ndim:02x}, got {data[:4].hex(' ')}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = math.prod(shape)
    actual = len(data) - header_size
    if actual != expected:
        raise DatasetFormatError(
            f"{path}: header declares shape {shape} ({expected} bytes of data), "
            f"but the file has {actual}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode an IDX image file (N, H, W) and its IDX label file (N,).

    Returns images of shape (N, H, W, 1) and int64 labels.
    """
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise DatasetFormatError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return images[..., np.newaxis], labels.astype(np.int64)


def _pixels_to_images(pixels: np.ndarray) -> np.ndarray:
    # (N, 3072) channel-major rows -> (N, 32, 32, 3), copied so the result is
    # contiguous in the (N, H, W, C) order.
    planes = pixels.reshape(-1, 3, CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1))


def read_cifar_binary(
    path: Path, label_bytes: int = 1, label_index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one file of the CIFAR binary version.

    Args:
        path: a ``*.bin`` file.
        label_bytes: label bytes before each image: 1 for CIFAR-10, 2 for CIFAR-100.
        label_index: which label byte to return: 0 for CIFAR-10, 1 (fine label) for
            CIFAR-100.
    """
    record_size = label_bytes + CIFAR_PIXELS
    data = path.read_bytes()
    if not data or len(data) % record_size:
        raise DatasetFormatError(
            f"{path}: size {len(data)} bytes is not a positive multiple of the "
            f"{record_size}-byte CIFAR record; the file is truncated or not a CIFAR "
            "binary-version file"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, record_size)
    labels = records[:, label_index].astype(np.int64)
    return _pixels_to_images(records[:, label_bytes:]), labels


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles bytes at protocols 0-2 as _codecs.encode(text, "latin1").
    # Only that call is accepted, so no other codec can be reached.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"_codecs.encode is allowed only as (str, 'latin1'), got ({type(text).__name__}, "
            f"{encoding!r})"
        )
    return text.encode("latin-1")


# Note [Restricted unpickling]
# Unpickling can call any importable function, so a crafted file could run code.
# The official CIFAR pickles only need numpy's array reconstruction: builtin
# containers, bytes, str and int come from pickle opcodes and never go through
# find_class. The one exception is bytes in a Python 3 pickle of protocol 0-2, which
# is rebuilt by a latin-1 encode call. Every global is resolved through the table
# below, so any other reference (os.system, builtins.exec, ...) is rejected before
# anything is called. The numpy functions are taken from live objects so that the
# table matches the installed numpy, which renamed numpy.core to numpy._core in
# version 2.0.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1, dtype=np.uint8))[0]
_FROMBUFFER = np.ndarray.__reduce_ex__(np.zeros(1, dtype=np.uint8), 5)[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    # Arrays pickled with protocol 5 by Python 3 use _frombuffer instead.
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays and bytes.

    See Note [Restricted unpickling].
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed in a dataset pickle; "
                "only numpy arrays and bytes can be rebuilt"
            ) from None


def load_restricted_pickle(file: BinaryIO) -> Any:
    """Unpickle ``file`` with :class:`RestrictedUnpickler`.

    Python 2 ``str`` values load as ``bytes``.
    """
    return RestrictedUnpickler(file, encoding="bytes").load()


def read_cifar_pickle(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one file of the CIFAR python version without running pickled code.

    Args:
        path: e.g. ``data_batch_1`` (CIFAR-10) or ``train`` (CIFAR-100).
        label_key: ``"labels"`` for CIFAR-10, ``"fine_labels"`` for CIFAR-100.

    Raises:
        DatasetFormatError: the pickle references a forbidden global, is malformed,
            or lacks a uint8 ``data`` array of shape (N, 3072) with N integer labels.
    """
    with path.open("rb") as file:
        try:
            content = load_restricted_pickle(file)
        # A malformed pickle can fail in many ways. The restricted globals keep
        # this from running code, so every failure means a bad file.
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
        ) as err:
            raise DatasetFormatError(
                f"{path}: rejected as a CIFAR python-version pickle: {err}"
            ) from err

    if not isinstance(content, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    batch = {
        key.decode("latin-1") if isinstance(key, bytes) else key: value
        for key, value in content.items()
    }

    pixels = batch.get("data")
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 2
        or pixels.shape[1] != CIFAR_PIXELS
    ):
        description = (
            f"array {pixels.dtype} {pixels.shape}"
            if isinstance(pixels, np.ndarray)
            else type(pixels).__name__
        )
        raise DatasetFormatError(
            f"{path}: expected 'data' to be a uint8 array of shape (N, {CIFAR_PIXELS}),"
            f" got {description}"
        )

    raw_labels = batch.get(label_key)
    if not isinstance(raw_labels, list | np.ndarray) or not all(
        isinstance(label, int | np.integer) for label in raw_labels
    ):
        raise DatasetFormatError(
            f"{path}: expected {label_key!r} to be a list of integers, got "
            f"{type(raw_labels).__name__}"
        )
    labels = np.asarray(raw_labels, dtype=np.int64)
    if labels.shape != (len(pixels),):
        raise DatasetFormatError(
            f"{path}: {len(pixels)} images but {label_key!r} has shape {labels.shape}"
        )
    return _pixels_to_images(pixels), labels
