"""Tests of the data layer: registry, file readers, embedded sample, torch datasets.

Full-dataset tests read the real MNIST, Fashion-MNIST and CIFAR-10 files in their
official formats from ``SHARED_DATA`` and are skipped when a dataset is absent. Format edge
cases use small files written in the official formats under ``tmp_path``. No test
uses the network: every load passes ``download=False`` or replaces the downloader.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import pickle
import shutil
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import robustdc.data.locate as locate
import robustdc.data.sample as sample
from robustdc.data import (
    DATA_DIR_ENV,
    DATASETS,
    DEFAULT_DATASET,
    DatasetChecksumError,
    DatasetFormatError,
    DatasetInfo,
    DatasetNotFoundError,
    ImageDataset,
    get_info,
    load_arrays,
    load_dataset,
    random_crop_flip,
    resolve_data_dir,
)
from robustdc.data.formats import (
    load_restricted_pickle,
    read_cifar_binary,
    read_cifar_pickle,
    read_idx,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

MNIST_TEST_FIRST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR10_TEST_FIRST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any socket connection fail, so that a test can never use the network."""

    def reject_connection(*args: object, **kwargs: object) -> None:
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", reject_connection)
    monkeypatch.setattr(socket.socket, "connect_ex", reject_connection)


@pytest.fixture(autouse=True)
def no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def shared_dataset_dir(folder: str) -> Path:
    """Return the shared data directory, or skip when ``folder`` is absent from it."""
    if not (SHARED_DATA / folder).is_dir():
        pytest.skip(f"real {folder} files not found in {SHARED_DATA}")
    return SHARED_DATA


# ---------------------------------------------------------------------------
# Writers for small files in the official formats.


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)


def write_mnist_split(
    folder: Path, split: str, images: np.ndarray, labels: np.ndarray, compress: bool = True
) -> None:
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if compress else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)


def cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Encode (N, 32, 32, 3) images as CIFAR-10 binary records."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tobytes()


def random_cifar_batch(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    labels = generator.integers(0, 10, size=count).astype(np.int64)
    return images, labels


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1, dtype=np.uint8))[0]


class Python2Pickler(pickle._Pickler):
    """Pickler that writes what Python 2's cPickle wrote for the official CIFAR files.

    Python 2 pickled its ``str`` type with the (SHORT_)BINSTRING opcodes and named
    numpy's reconstruction function ``numpy.core.multiarray._reconstruct``. The
    pure-Python pickler is subclassed because only it allows replacing those steps.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_python2_str
    dispatch[bytes] = save_python2_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        names = {
            _RECONSTRUCT: b"numpy.core.multiarray\n_reconstruct\n",
            np.ndarray: b"numpy\nndarray\n",
            np.dtype: b"numpy\ndtype\n",
        }
        self.write(pickle.GLOBAL + names[obj])
        self.memoize(obj)


def cifar_python_batch(images: np.ndarray, labels: np.ndarray, protocol: str) -> bytes:
    """Encode a CIFAR-10 python-version batch: Python 2 style or a Python 3 protocol."""
    batch = {
        "batch_label": "testing batch 1 of 1",
        "labels": [int(label) for label in labels],
        "data": images.transpose(0, 3, 1, 2).reshape(len(images), -1).copy(),
        "filenames": [f"image_{index}.png" for index in range(len(images))],
    }
    if protocol == "python2":
        buffer = io.BytesIO()
        Python2Pickler(buffer, protocol=2).dump(batch)
        return buffer.getvalue()
    return pickle.dumps(batch, protocol=int(protocol))


class RunsShellCommand:
    """Object whose unpickling would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


class EvaluatesCode:
    """Object whose unpickling would evaluate Python source."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (self.source,))


# ---------------------------------------------------------------------------
# Registry and argument checks.


def test_registry_lists_required_datasets() -> None:
    for name in ("mnist-sample", "mnist", "fashion-mnist", "cifar10"):
        assert name in DATASETS
    assert DEFAULT_DATASET == "mnist-sample"


@pytest.mark.parametrize("name", list(DATASETS))
def test_registry_entry_consistent(name: str) -> None:
    info = DATASETS[name]
    assert isinstance(info, DatasetInfo)
    assert info.name == name
    assert len(info.class_names) == info.num_classes
    assert len(set(info.class_names)) == info.num_classes
    assert len(info.mean) == info.in_channels
    assert len(info.std) == info.in_channels
    assert all(0 < value < 1 for value in info.mean + info.std)


def test_registry_known_constants() -> None:
    assert DATASETS["mnist"].mean == (0.1307,)
    assert DATASETS["mnist"].std == (0.3081,)
    assert DATASETS["cifar10"].mean == (0.4914, 0.4822, 0.4465)
    assert DATASETS["cifar10"].std == (0.2470, 0.2435, 0.2616)
    assert DATASETS["cifar10"].class_names[3] == "cat"
    assert DATASETS["mnist-sample"].mean == DATASETS["mnist"].mean


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("mnsit", "mnist"), ("cifar-10", "cifar10"), ("fashion_mnist", "fashion-mnist")],
    ids=["swapped-letters", "extra-dash", "underscore"],
)
def test_get_info_suggests_closest(name: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match=f"did you mean '{suggestion}'") as info:
        get_info(name)
    message = str(info.value)
    assert message.startswith(f"unknown dataset '{name}'; expected one of: ")
    assert "mnist-sample, mnist, fashion-mnist, cifar10" in message
    assert "\n" not in message


def test_get_info_unknown_without_suggestion() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as info:
        get_info("imagenet")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("load", [load_arrays, load_dataset], ids=["arrays", "dataset"])
def test_unknown_name_rejected(load: Callable[..., object]) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar01'.*did you mean 'cifar10'"):
        load("cifar01", "train", download=False)


@pytest.mark.parametrize("load", [load_arrays, load_dataset], ids=["arrays", "dataset"])
def test_unknown_split_rejected(load: Callable[..., object]) -> None:
    with pytest.raises(ValueError, match="unknown split 'val'; expected one of: train, test"):
        load("mnist-sample", "val")


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_below_one_rejected(limit: int) -> None:
    with pytest.raises(ValueError, match=f"limit must be >= 1 or None, got {limit}"):
        load_dataset("mnist-sample", "test", limit=limit)


@pytest.mark.parametrize("limit", [2.5, "10", True])
def test_limit_non_integer_rejected(limit: object) -> None:
    with pytest.raises(TypeError, match="limit must be an integer or None"):
        load_dataset("mnist-sample", "test", limit=limit)


# ---------------------------------------------------------------------------
# Data directory resolution and missing files.


def test_resolve_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "robustdc" / "data"

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    assert resolve_data_dir() == tmp_path / "from-env"
    assert resolve_data_dir("") == tmp_path / "from-env"

    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert resolve_data_dir("~/data") == tmp_path / "home" / "data"


def test_resolve_data_dir_does_not_create(tmp_path: Path) -> None:
    resolve_data_dir(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize(
    ("name", "split", "expected_files"),
    [
        ("mnist", "train", ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]),
        ("fashion-mnist", "test", ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]),
        ("cifar10", "train", ["data_batch_1.bin", "data_batch_5.bin", "data_batch_1"]),
        ("cifar10", "test", ["test_batch.bin", "test_batch"]),
        ("cifar100", "train", ["train.bin", "train"]),
    ],
)
def test_missing_files_offline_error(
    tmp_path: Path, name: str, split: str, expected_files: list[str]
) -> None:
    data_dir = tmp_path / "empty"
    with pytest.raises(DatasetNotFoundError) as info:
        load_arrays(name, split, data_dir=data_dir, download=False)
    error = info.value
    message = str(error)

    assert isinstance(error, FileNotFoundError)
    assert message.startswith(f"dataset '{name}' ({split} split) not found in data directory")
    assert str(data_dir) in message
    for file_name in expected_files:
        assert file_name in message
        assert file_name in error.expected_files
    assert "download=False" in message
    assert "--data-dir" in message
    assert DATA_DIR_ENV in message
    assert "\n" not in message
    assert error.data_dir == data_dir
    assert all(folder.is_relative_to(data_dir) for folder in error.searched)
    assert not data_dir.exists()


def test_missing_files_uses_env_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env-dir"))
    with pytest.raises(DatasetNotFoundError, match="env-dir"):
        load_dataset("mnist", "test", download=False)


def test_failed_download_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def failing_download(name: str, split: str, data_dir: Path) -> None:
        calls.append((name, split, data_dir))
        raise OSError("name resolution failed")

    monkeypatch.setattr(locate, "download_with_torchvision", failing_download)
    with pytest.raises(DatasetNotFoundError) as info:
        load_arrays("cifar10", "test", data_dir=tmp_path, download=True)

    assert calls == [("cifar10", "test", tmp_path)]
    assert "Downloading with torchvision failed: name resolution failed" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_download_fills_torchvision_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    labels = np.array([4, 0, 9], dtype=np.uint8)

    def fake_download(name: str, split: str, data_dir: Path) -> None:
        write_mnist_split(data_dir / "MNIST" / "raw", split, images, labels, compress=False)

    monkeypatch.setattr(locate, "download_with_torchvision", fake_download)
    loaded_images, loaded_labels = load_arrays("mnist", "test", data_dir=tmp_path)

    np.testing.assert_array_equal(loaded_images[..., 0], images)
    np.testing.assert_array_equal(loaded_labels, labels)


# ---------------------------------------------------------------------------
# IDX reader on small files.


@pytest.mark.parametrize(
    ("folder", "compress"),
    [("mnist", True), ("mnist", False), ("MNIST/raw", False)],
    ids=["own-gzipped", "own-uncompressed", "torchvision-layout"],
)
def test_idx_layouts(tmp_path: Path, folder: str, compress: bool) -> None:
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([1, 2, 3, 4, 5], dtype=np.uint8)
    write_mnist_split(tmp_path / folder, "train", images, labels, compress)

    loaded_images, loaded_labels = load_arrays("mnist", "train", data_dir=tmp_path, download=False)

    assert loaded_images.shape == (5, 28, 28, 1)
    assert loaded_images.dtype == np.uint8
    assert loaded_labels.dtype == np.int64
    np.testing.assert_array_equal(loaded_images[..., 0], images)
    np.testing.assert_array_equal(loaded_labels, labels)


def test_idx_bad_magic_rejected(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(bytes([0, 0, 0x0D, 3]) + struct.pack(">3I", 1, 2, 2) + bytes(16))
    with pytest.raises(DatasetFormatError, match="expected magic 00 00 08 03, got 00 00 0d 03"):
        read_idx(path, ndim=3)


def test_idx_truncated_rejected(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    write_idx(path, np.zeros((4, 28, 28), dtype=np.uint8), compress=True)
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-10]))
    with pytest.raises(DatasetFormatError, match="truncated or corrupt"):
        read_idx(path, ndim=3)


def test_idx_invalid_gzip_rejected(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    path.write_bytes(b"not gzip data at all")
    with pytest.raises(DatasetFormatError, match="invalid gzip data"):
        read_idx(path, ndim=3)


def test_idx_label_out_of_range_rejected(tmp_path: Path) -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    write_mnist_split(tmp_path / "mnist", "test", images, np.array([3, 10], dtype=np.uint8))
    with pytest.raises(
        DatasetFormatError, match=r"labels must be in \[0, 9\].*got values from 3 to 10"
    ):
        load_arrays("mnist", "test", data_dir=tmp_path, download=False)


def test_idx_wrong_image_size_rejected(tmp_path: Path) -> None:
    images = np.zeros((2, 32, 32), dtype=np.uint8)
    write_mnist_split(tmp_path / "fashion-mnist", "test", images, np.array([0, 1], dtype=np.uint8))
    with pytest.raises(DatasetFormatError, match=r"shape \(N, 28, 28, 1\), got \(2, 32, 32, 1\)"):
        load_arrays("fashion-mnist", "test", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------------------
# CIFAR readers on small files.


def test_cifar_binary_partial_batches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    first = random_cifar_batch(3, seed=1)
    third = random_cifar_batch(2, seed=3)
    (folder / "data_batch_1.bin").write_bytes(cifar_records(*first))
    (folder / "data_batch_3.bin").write_bytes(cifar_records(*third))

    with caplog.at_level(logging.INFO, logger="robustdc.data"):
        images, labels = load_arrays("cifar10", "train", data_dir=tmp_path, download=False)

    np.testing.assert_array_equal(images, np.concatenate([first[0], third[0]]))
    np.testing.assert_array_equal(labels, np.concatenate([first[1], third[1]]))
    assert "using 2 of 5 batches (data_batch_1.bin, data_batch_3.bin)" in caplog.text
    assert any(
        record.levelno == logging.WARNING and "partial" in record.getMessage()
        for record in caplog.records
    )


def test_cifar_binary_truncated_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    (folder / "test_batch.bin").write_bytes(cifar_records(*random_cifar_batch(2, seed=0))[:-1])
    with pytest.raises(DatasetFormatError, match="not a positive multiple of the 3073-byte"):
        load_arrays("cifar10", "test", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("protocol", ["python2", "2", "4", "5"])
def test_cifar_python_version(tmp_path: Path, protocol: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images, labels = random_cifar_batch(4, seed=7)
    (folder / "test_batch").write_bytes(cifar_python_batch(images, labels, protocol))

    loaded_images, loaded_labels = load_arrays("cifar10", "test", data_dir=tmp_path, download=False)

    np.testing.assert_array_equal(loaded_images, images)
    np.testing.assert_array_equal(loaded_labels, labels)


def test_cifar_binary_and_python_agree(tmp_path: Path) -> None:
    images, labels = random_cifar_batch(3, seed=11)
    binary_path = tmp_path / "test_batch.bin"
    binary_path.write_bytes(cifar_records(images, labels))
    python_path = tmp_path / "test_batch"
    python_path.write_bytes(cifar_python_batch(images, labels, "python2"))

    binary_images, binary_labels = read_cifar_binary(binary_path)
    python_images, python_labels = read_cifar_pickle(python_path, "labels")

    np.testing.assert_array_equal(binary_images, python_images)
    np.testing.assert_array_equal(binary_labels, python_labels)


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    images, fine_labels = random_cifar_batch(3, seed=13)
    fine_labels = fine_labels * 10 + 5  # values up to 95, beyond CIFAR-10's range
    coarse_labels = fine_labels // 5

    python_folder = tmp_path / "cifar-100-python"
    python_folder.mkdir()
    batch = {
        b"data": images.transpose(0, 3, 1, 2).reshape(3, -1).copy(),
        b"fine_labels": fine_labels.tolist(),
        b"coarse_labels": coarse_labels.tolist(),
    }
    (python_folder / "test").write_bytes(pickle.dumps(batch, protocol=4))

    binary_folder = tmp_path / "cifar100" / "cifar-100-binary"
    binary_folder.mkdir(parents=True)
    planes = images.transpose(0, 3, 1, 2).reshape(3, -1)
    label_columns = np.stack([coarse_labels, fine_labels], axis=1).astype(np.uint8)
    (binary_folder / "train.bin").write_bytes(
        np.concatenate([label_columns, planes], axis=1).tobytes()
    )

    for split in ("test", "train"):
        loaded_images, loaded_labels = load_arrays(
            "cifar100", split, data_dir=tmp_path, download=False
        )
        np.testing.assert_array_equal(loaded_images, images)
        np.testing.assert_array_equal(loaded_labels, fine_labels)


@pytest.mark.parametrize(
    "payload",
    [RunsShellCommand, EvaluatesCode],
    ids=["os-system", "builtins-exec"],
)
def test_malicious_pickle_not_executed(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "marker"
    if payload is RunsShellCommand:
        evil = RunsShellCommand(f"touch {marker}")
    else:
        evil = EvaluatesCode(f"open({str(marker)!r}, 'w').close()")
    batch = {"data": evil, "labels": [0]}
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))

    with pytest.raises(DatasetFormatError, match="is not allowed in a dataset pickle"):
        load_arrays("cifar10", "test", data_dir=tmp_path, download=False)
    assert not marker.exists()


def test_restricted_pickle_allows_plain_data() -> None:
    content = {b"key": [1, "two", b"three", np.arange(3, dtype=np.uint8)]}
    loaded = load_restricted_pickle(io.BytesIO(pickle.dumps(content, protocol=4)))
    assert loaded[b"key"][:3] == [1, "two", b"three"]
    np.testing.assert_array_equal(loaded[b"key"][3], np.arange(3, dtype=np.uint8))


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ([1, 2, 3], "expected a pickled dict, got list"),
        ({"labels": [0]}, "expected 'data' to be a uint8 array of shape"),
        ({"data": np.zeros((1, 3072), np.float32), "labels": [0]}, "got array float32"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "2 images but 'labels'"),
        ({"data": np.zeros((1, 3072), np.uint8), "labels": ["cat"]}, "list of integers"),
    ],
    ids=["not-dict", "no-data", "float-data", "label-count", "string-labels"],
)
def test_cifar_python_bad_content(tmp_path: Path, batch: object, match: str) -> None:
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(DatasetFormatError, match=match):
        read_cifar_pickle(path, "labels")


def test_cifar_python_truncated_rejected(tmp_path: Path) -> None:
    path = tmp_path / "test_batch"
    images, labels = random_cifar_batch(2, seed=0)
    path.write_bytes(cifar_python_batch(images, labels, "python2")[:100])
    with pytest.raises(DatasetFormatError, match="rejected as a CIFAR python-version pickle"):
        read_cifar_pickle(path, "labels")


# ---------------------------------------------------------------------------
# Real data.


def test_mnist_test_real() -> None:
    data_dir = shared_dataset_dir("mnist")
    images, labels = load_arrays("mnist", "test", data_dir=data_dir, download=False)

    assert images.shape == (10_000, 28, 28, 1)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert labels[:10].tolist() == MNIST_TEST_FIRST_LABELS
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TEST_CLASS_COUNTS
    assert images.max() == 255
    assert images.min() == 0


def test_mnist_train_real_matches_constants() -> None:
    data_dir = shared_dataset_dir("mnist")
    images, labels = load_arrays("mnist", "train", data_dir=data_dir, download=False)

    assert images.shape == (60_000, 28, 28, 1)
    assert labels.shape == (60_000,)
    pixels = images.astype(np.float64) / 255
    assert pixels.mean() == pytest.approx(DATASETS["mnist"].mean[0], abs=1e-4)
    assert pixels.std() == pytest.approx(DATASETS["mnist"].std[0], abs=1e-4)


def test_fashion_mnist_real() -> None:
    data_dir = shared_dataset_dir("fashion-mnist")
    test_images, test_labels = load_arrays(
        "fashion-mnist", "test", data_dir=data_dir, download=False
    )
    train_images, train_labels = load_arrays(
        "fashion-mnist", "train", data_dir=data_dir, download=False
    )

    assert test_images.shape == (10_000, 28, 28, 1)
    assert np.bincount(test_labels, minlength=10).tolist() == [1000] * 10
    assert train_images.shape == (60_000, 28, 28, 1)
    assert np.bincount(train_labels, minlength=10).tolist() == [6000] * 10
    pixels = train_images.astype(np.float64) / 255
    assert pixels.mean() == pytest.approx(DATASETS["fashion-mnist"].mean[0], abs=1e-4)
    assert pixels.std() == pytest.approx(DATASETS["fashion-mnist"].std[0], abs=1e-4)


def test_cifar10_test_real() -> None:
    data_dir = shared_dataset_dir("cifar10")
    images, labels = load_arrays("cifar10", "test", data_dir=data_dir, download=False)

    assert images.shape == (10_000, 32, 32, 3)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert labels[:10].tolist() == CIFAR10_TEST_FIRST_LABELS
    assert np.bincount(labels, minlength=10).tolist() == [1000] * 10


def test_cifar10_channel_order_real() -> None:
    # The first record's pixel bytes are 1,024 red, then green, then blue values.
    data_dir = shared_dataset_dir("cifar10")
    raw = (data_dir / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    record = np.frombuffer(raw[:3073], dtype=np.uint8)
    images, _ = load_arrays("cifar10", "test", data_dir=data_dir, download=False)

    for channel in range(3):
        plane = record[1 + 1024 * channel : 1 + 1024 * (channel + 1)].reshape(32, 32)
        np.testing.assert_array_equal(images[0, :, :, channel], plane)


def test_cifar10_train_real() -> None:
    data_dir = shared_dataset_dir("cifar10")
    folder = data_dir / "cifar10" / "cifar-10-batches-bin"
    batches = sorted(folder.glob("data_batch_*.bin"))
    images, labels = load_arrays("cifar10", "train", data_dir=data_dir, download=False)

    assert images.shape == (10_000 * len(batches), 32, 32, 3)
    assert labels.shape == (10_000 * len(batches),)
    # The constants describe the full 50,000-image training set. Batches 1 and 2
    # alone differ from them by less than 0.002.
    pixels = images.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(pixels.mean(axis=0), DATASETS["cifar10"].mean, atol=0.005)
    np.testing.assert_allclose(pixels.std(axis=0), DATASETS["cifar10"].std, atol=0.005)


# ---------------------------------------------------------------------------
# Embedded sample.


def test_sample_sizes_and_types() -> None:
    for split, size in (("train", 10_000), ("test", 2_000)):
        images, labels = load_arrays("mnist-sample", split)
        assert images.shape == (size, 28, 28, 1)
        assert images.dtype == np.uint8
        assert labels.shape == (size,)
        assert labels.dtype == np.int64
        assert set(np.unique(labels).tolist()) == set(range(10))


def test_sample_asset_small() -> None:
    assert sample.SAMPLE_ASSET.stat().st_size < 3_000_000


def test_sample_ignores_data_dir(tmp_path: Path) -> None:
    images, _ = load_arrays("mnist-sample", "test", data_dir=tmp_path / "absent", download=False)
    assert len(images) == 2_000


def test_sample_matches_real_mnist() -> None:
    data_dir = shared_dataset_dir("mnist")
    for split, size in (("train", 10_000), ("test", 2_000)):
        sample_images, sample_labels = load_arrays("mnist-sample", split)
        mnist_images, mnist_labels = load_arrays("mnist", split, data_dir=data_dir, download=False)
        np.testing.assert_array_equal(sample_images, mnist_images[:size])
        np.testing.assert_array_equal(sample_labels, mnist_labels[:size])


@pytest.mark.parametrize("damage", ["flip-byte", "truncate"])
def test_sample_corrupt_copy_rejected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, damage: str
) -> None:
    copy = tmp_path / "mnist-sample.npz"
    data = bytearray(sample.SAMPLE_ASSET.read_bytes())
    if damage == "flip-byte":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[-1000:]
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(sample, "SAMPLE_ASSET", copy)

    with pytest.raises(DatasetChecksumError, match=r"embedded sample .* is corrupt: SHA-256 is"):
        load_arrays("mnist-sample", "train")


def test_sample_intact_copy_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy = tmp_path / "mnist-sample.npz"
    shutil.copy(sample.SAMPLE_ASSET, copy)
    monkeypatch.setattr(sample, "SAMPLE_ASSET", copy)
    images, _ = load_arrays("mnist-sample", "test")
    assert len(images) == 2_000


def test_sample_missing_asset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sample, "SAMPLE_ASSET", tmp_path / "mnist-sample.npz")
    with pytest.raises(DatasetNotFoundError, match="is missing; reinstall robustdc"):
        load_arrays("mnist-sample", "train")


def test_sample_archive_reproducible(tmp_path: Path) -> None:
    arrays = {
        "train_images": np.zeros((2, 28, 28), np.uint8),
        "train_labels": np.array([1, 2], np.uint8),
    }
    first = sample.write_sample_archive(tmp_path / "a.npz", arrays)
    second = sample.write_sample_archive(tmp_path / "b.npz", dict(reversed(arrays.items())))
    assert first == second
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


# ---------------------------------------------------------------------------
# Caching.


def test_cached_arrays_shared_and_read_only() -> None:
    first_images, first_labels = load_arrays("mnist-sample", "test")
    second_images, _ = load_arrays("mnist-sample", "test")
    assert first_images is second_images
    with pytest.raises(ValueError, match="read-only"):
        first_images[0, 0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        first_labels[0] = 1


def test_cache_rereads_replaced_file(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    write_mnist_split(folder, "test", images, np.array([1, 2], dtype=np.uint8))
    assert load_arrays("mnist", "test", data_dir=tmp_path, download=False)[1].tolist() == [1, 2]

    write_mnist_split(folder, "test", images[:1], np.array([7], dtype=np.uint8))
    assert load_arrays("mnist", "test", data_dir=tmp_path, download=False)[1].tolist() == [7]


# ---------------------------------------------------------------------------
# Torch datasets and augmentation.


def test_dataset_items() -> None:
    dataset = load_dataset("mnist-sample", "test")
    images, labels = load_arrays("mnist-sample", "test")
    image, label = dataset[3]

    assert isinstance(dataset, ImageDataset)
    assert len(dataset) == 2_000
    assert image.shape == (1, 28, 28)
    assert image.dtype == torch.float32
    assert isinstance(label, int)
    assert label == labels[3]
    assert float(image.min()) >= 0.0
    assert float(image.max()) <= 1.0
    expected = torch.from_numpy(images[3].transpose(2, 0, 1).astype(np.float32) / 255)
    torch.testing.assert_close(image, expected)


def test_dataset_limit_takes_first() -> None:
    dataset = load_dataset("mnist-sample", "train", limit=25)
    full = load_dataset("mnist-sample", "train")
    assert len(dataset) == 25
    torch.testing.assert_close(dataset[24][0], full[24][0])
    assert len(load_dataset("mnist-sample", "test", limit=10**9)) == 2_000


def test_dataset_does_not_alias_cache() -> None:
    dataset = load_dataset("mnist-sample", "test", limit=1)
    dataset.images[0].fill_(0)
    images, _ = load_arrays("mnist-sample", "test")
    assert images[0].max() > 0


def test_dataset_real_cifar_item() -> None:
    data_dir = shared_dataset_dir("cifar10")
    dataset = load_dataset("cifar10", "test", data_dir=data_dir, download=False, limit=10)
    image, label = dataset[0]
    assert image.shape == (3, 32, 32)
    assert label == CIFAR10_TEST_FIRST_LABELS[0]


def _find_crop(
    augmented: torch.Tensor, original: torch.Tensor, padding: int = 4
) -> tuple[int, int, bool] | None:
    """Return (top, left, flipped) of the crop of ``original`` that equals ``augmented``.

    Both images are (C, H, W). Returns None when no crop and flip matches.
    """
    height, width = original.shape[-2:]
    padded = F.pad(original, (padding, padding, padding, padding))
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top : top + height, left : left + width]
            if torch.equal(augmented, crop):
                return top, left, False
            if torch.equal(augmented, crop.flip(-1)):
                return top, left, True
    return None


def test_augment_dataset_crops_and_flips(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    images, labels = random_cifar_batch(40, seed=5)
    (folder / "data_batch_1.bin").write_bytes(cifar_records(images, labels))
    plain = load_dataset("cifar10", "train", data_dir=tmp_path, download=False)
    augmented = load_dataset("cifar10", "train", data_dir=tmp_path, download=False, augment=True)

    torch.manual_seed(0)
    crops = []
    for index in range(len(plain)):
        original, label = plain[index]
        image, augmented_label = augmented[index]
        assert image.shape == (3, 32, 32)
        assert image.dtype == torch.float32
        assert float(image.min()) >= 0.0
        assert float(image.max()) <= 1.0
        assert augmented_label == label
        crop = _find_crop(image, original)
        assert crop is not None, f"item {index} is not a padded crop of the original"
        crops.append(crop)

    # 40 draws of 9 x 9 offsets and a fair flip: the bounds below fail by chance
    # with probability below 1e-4.
    assert sum(crop != (4, 4, False) for crop in crops) >= 35
    assert 8 <= sum(flipped for _, _, flipped in crops) <= 32
    assert len({top for top, _, _ in crops}) >= 5
    assert len({left for _, left, _ in crops}) >= 5


def test_random_crop_flip_batch() -> None:
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(16, 3, 32, 32, generator=generator)
    augmented = random_crop_flip(images, generator=generator)

    assert augmented.shape == images.shape
    assert augmented.dtype == images.dtype
    assert float(augmented.min()) >= 0.0
    assert float(augmented.max()) <= 1.0
    crops = [_find_crop(image, original) for original, image in zip(images, augmented, strict=True)]
    assert None not in crops
    assert sum(crop != (4, 4, False) for crop in crops) >= 14
    assert 2 <= sum(flipped for _, _, flipped in crops) <= 14
    # Zero padding shows up as exact zeros, which uniform random pixels almost
    # surely are not.
    assert bool((augmented == 0).any())


def test_random_crop_flip_reproducible() -> None:
    images = torch.rand(8, 1, 28, 28)
    first = random_crop_flip(images, generator=torch.Generator().manual_seed(9))
    second = random_crop_flip(images, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(first, second)


def test_random_crop_flip_bad_shape() -> None:
    with pytest.raises(
        ValueError, match=r"expected images of shape \(N, C, H, W\), got \(3, 32, 32\)"
    ):
        random_crop_flip(torch.zeros(3, 32, 32))


@pytest.mark.parametrize(
    ("name", "split", "match"),
    [
        ("mnist-sample", "train", "defined only for cifar10, cifar100, got dataset 'mnist-sample'"),
        ("cifar10", "test", "only for the train split, got 'test'"),
    ],
    ids=["mnist", "test-split"],
)
def test_augment_unsupported_rejected(name: str, split: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_dataset(name, split, augment=True, download=False)
