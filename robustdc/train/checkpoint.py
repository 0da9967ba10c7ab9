"""Checkpoint folders: layout, atomic writes and safe loading.

A trained model lives in ``<workdir>/models/<dataset>/<config.name>/``:

- ``model.pt``: the model's state dict, nothing else, loaded with
  ``torch.load(..., weights_only=True)``.
- ``config.json``: the fields of :class:`~robustdc.train.config.TrainConfig`, plus
  ``name``, ``epochs_completed``, ``format_version``, the ``created`` and ``updated``
  times (UTC, ISO 8601), the library ``versions`` and the final ``test_accuracy``.
- ``metrics.csv``: one row per finished epoch: ``epoch, loss, train_accuracy,
  test_accuracy, lr, seconds``.
- ``state.pt``: what resuming needs: the epoch, model, optimizer and scheduler states,
  every random generator state, the weight-projection step count and the metric rows.
  It contains only tensors and plain Python values, so it loads with ``weights_only=True``.

Every file is written to a temporary file in the same folder and moved into place with
``os.replace``, so a reader sees the old file or the new one, never a partial one. After
each epoch ``state.pt`` is written first and ``config.json`` last. Resuming reads
``state.pt``, so a crash between the writes loses nothing.

Loading never modifies the folder. A file that cannot be read, such as a truncated
``model.pt``, an invalid ``config.json``, a checkpoint of another model than requested or a
pickle that ``weights_only`` loading rejects, raises :class:`CheckpointError`. Its message names
the file and recommends deleting or moving it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import platform
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import pandas as pd
import torch
from torch import nn

from robustdc.train.config import TrainConfig, build_model_from_config, train_command

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
STATE_FILE = "state.pt"

#: Version of the layout of ``config.json`` and ``state.pt``.
FORMAT_VERSION = 1

METRIC_COLUMNS: tuple[str, ...] = (
    "epoch",
    "loss",
    "train_accuracy",
    "test_accuracy",
    "lr",
    "seconds",
)

# Keys of config.json that are not TrainConfig fields.
_METADATA_KEYS = (
    "format_version",
    "name",
    "epochs_completed",
    "created",
    "updated",
    "versions",
    "test_accuracy",
)

# Exceptions that torch.load (2.14) raises for files it cannot read: RuntimeError for a
# truncated zip archive, EOFError for an empty file, KeyError for arbitrary bytes, and
# UnpicklingError for a pickle that weights_only loading rejects.
_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError)

_VERSIONED_PACKAGES = ("robustdc", "torch", "torchattacks", "numpy")


class CheckpointError(Exception):
    """A checkpoint folder exists but cannot be used; the message names the file."""


class CheckpointNotFoundError(CheckpointError):
    """No finished checkpoint exists where one was required.

    Attributes:
        path: the checkpoint folder that was looked up.
        command: the ``robustdc train`` command line that trains it.
    """

    def __init__(self, message: str, *, path: Path, command: str) -> None:
        super().__init__(message)
        self.path = path
        self.command = command


@dataclass(frozen=True)
class CheckpointInfo:
    """The parsed ``config.json`` of a checkpoint folder.

    Attributes:
        folder: the checkpoint folder.
        config: the stored config; its ``epochs`` is the planned number of epochs.
        epochs_completed: epochs finished and saved, from 0 to ``config.epochs``.
        created: when training started, as written (ISO 8601).
        metadata: every other key of ``config.json``.
    """

    folder: Path
    config: TrainConfig
    epochs_completed: int
    created: str
    metadata: Mapping[str, Any]

    @property
    def finished(self) -> bool:
        """Whether every planned epoch is done."""
        return self.epochs_completed >= self.config.epochs


def checkpoint_dir(workdir: str | os.PathLike[str], config: TrainConfig) -> Path:
    """Return ``<workdir>/models/<dataset>/<config.name>``; nothing is created."""
    return Path(workdir) / "models" / config.dataset / config.name


def delete_hint(path: Path) -> str:
    """Return the sentence of an error message that recommends deleting or moving ``path``."""
    return f"Delete or move {path} to train the model again."


# ---------------------------------------------------------------------------
# Atomic writes


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in its folder and ``os.replace``.

    ``write`` gets the open binary temporary file. On any error the temporary file is
    removed and ``path`` keeps its old content.
    """
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file readable by its owner only; use the usual mode.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _umask() -> int:
    # os.umask can only be read by setting it, so set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_torch(obj: object, path: Path) -> None:
    """Write ``obj`` with ``torch.save`` atomically."""
    atomic_write(path, lambda file: torch.save(obj, file))


def save_text(text: str, path: Path) -> None:
    """Write UTF-8 ``text`` atomically."""
    data = text.encode("utf-8")
    atomic_write(path, lambda file: file.write(data))


# ---------------------------------------------------------------------------
# config.json


def library_versions() -> dict[str, str]:
    """Return the versions of Python and of the packages that shape a checkpoint."""
    versions = {"python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def utc_now() -> str:
    """Return the current UTC time as ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_config(
    folder: Path,
    config: TrainConfig,
    *,
    epochs_completed: int,
    created: str,
    test_accuracy: float | None,
) -> None:
    """Write ``config.json`` for ``config`` with the given progress."""
    document: dict[str, Any] = config.to_dict()
    document.update(
        format_version=FORMAT_VERSION,
        name=config.name,
        epochs_completed=epochs_completed,
        created=created,
        updated=utc_now(),
        versions=library_versions(),
        test_accuracy=test_accuracy,
    )
    save_text(json.dumps(document, indent=2) + "\n", folder / CONFIG_FILE)


def read_info(folder: Path) -> CheckpointInfo | None:
    """Parse ``folder/config.json``; return ``None`` when it does not exist.

    Raises:
        CheckpointError: the file cannot be read, is not valid JSON, has another format
            version, or contains invalid or missing fields.
    """
    path = folder / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}. {delete_hint(folder)}") from err

    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"invalid config.json {path}: not valid JSON ({err}). {delete_hint(folder)}"
        ) from err
    if not isinstance(document, dict):
        raise CheckpointError(
            f"invalid config.json {path}: expected a JSON object, got "
            f"{type(document).__name__}. {delete_hint(folder)}"
        )

    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"invalid config.json {path}: expected format_version {FORMAT_VERSION}, got "
            f"{version!r}. {delete_hint(folder)}"
        )
    fields = {key: value for key, value in document.items() if key not in _METADATA_KEYS}
    extra = {key: value for key, value in document.items() if key in _METADATA_KEYS}
    try:
        config = TrainConfig.from_dict(fields)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"invalid config.json {path}: {err}. {delete_hint(folder)}") from err

    completed = extra.get("epochs_completed")
    if (
        isinstance(completed, bool)
        or not isinstance(completed, int)
        or not 0 <= completed <= config.epochs
    ):
        raise CheckpointError(
            f"invalid config.json {path}: epochs_completed must be an integer in "
            f"[0, {config.epochs}], got {completed!r}. {delete_hint(folder)}"
        )
    return CheckpointInfo(
        folder=folder,
        config=config,
        epochs_completed=completed,
        created=str(extra.get("created", "")),
        metadata=extra,
    )


def check_matches(info: CheckpointInfo, expected: TrainConfig) -> None:
    """Raise :class:`CheckpointError` unless ``info`` was trained with ``expected``.

    Every field except ``epochs`` must be equal.
    """
    stored = info.config.identity()
    requested = expected.identity()
    differences = [
        f"{field}={stored[field]!r} (requested {requested[field]!r})"
        for field in stored
        if stored[field] != requested[field]
    ]
    if differences:
        raise CheckpointError(
            f"checkpoint {info.folder} does not match the requested model: it was trained "
            f"with {'; '.join(differences)}. {delete_hint(info.folder)}"
        )


# ---------------------------------------------------------------------------
# model.pt, state.pt and metrics.csv


def load_torch_file(path: Path, device: torch.device | str) -> Any:
    """Load ``path`` with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the file is missing, truncated, not a PyTorch file, or contains
            objects that ``weights_only`` loading rejects.
    """
    folder = path.parent
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file {path}. {delete_hint(folder)}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"rejected {path}: it contains Python objects other than tensors and plain values, "
            "which could run code when unpickled, so it was not loaded. A robustdc "
            f"checkpoint never contains such objects. {delete_hint(path)}"
        ) from err
    except _LOAD_ERRORS as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"cannot read {path}: the file is truncated or not a PyTorch file ({reason}). "
            f"{delete_hint(path)}"
        ) from err


def load_state_dict_into(model: nn.Module, state_dict: object, path: Path) -> None:
    """Load ``state_dict`` into ``model`` strictly, or raise :class:`CheckpointError`."""
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in state_dict.values()
    ):
        raise CheckpointError(
            f"invalid {path}: expected a state dict of tensors, got "
            f"{type(state_dict).__name__}. {delete_hint(path)}"
        )
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        reason = " ".join(str(err).split())
        raise CheckpointError(
            f"invalid {path}: its weights do not fit the model described by "
            f"{path.parent / CONFIG_FILE} ({reason}). {delete_hint(path.parent)}"
        ) from err


def write_metrics(folder: Path, rows: list[dict[str, float]]) -> None:
    """Write the per-epoch metric rows to ``metrics.csv``."""
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    save_text(frame.to_csv(index=False), folder / METRICS_FILE)


def read_metrics(folder: Path) -> pd.DataFrame:
    """Read ``metrics.csv`` of a checkpoint folder.

    Raises:
        CheckpointError: the file is missing, unreadable or lacks a column.
    """
    path = folder / METRICS_FILE
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise CheckpointError(f"cannot read {path}: {err}. {delete_hint(path)}") from err
    missing = [column for column in METRIC_COLUMNS if column not in frame.columns]
    if missing:
        raise CheckpointError(
            f"invalid {path}: missing column(s) {', '.join(missing)}. {delete_hint(path)}"
        )
    return frame


# ---------------------------------------------------------------------------
# Loading a trained model


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    expected: TrainConfig | None = None,
) -> tuple[nn.Module, TrainConfig]:
    """Load the model of a checkpoint folder, in eval mode.

    Args:
        path: the checkpoint folder, or its ``model.pt``.
        device: where to put the model.
        expected: the requested config. Every field except ``epochs`` must match the
            stored one, and the checkpoint must have at least ``expected.epochs``
            finished epochs.

    Returns:
        The model in eval mode on ``device``, and the stored config with ``epochs`` set
        to the number of epochs the weights were trained for.

    Raises:
        CheckpointNotFoundError: the folder or its ``config.json`` does not exist, or it
            has fewer finished epochs than ``expected.epochs``.
        CheckpointError: a file is invalid or the checkpoint does not match
            ``expected``. Nothing in the folder is changed.
    """
    folder = Path(path)
    if folder.name == MODEL_FILE and folder.is_file():
        folder = folder.parent

    info = read_info(folder)
    if info is None:
        if (folder / MODEL_FILE).exists() or (folder / STATE_FILE).exists():
            raise CheckpointError(
                f"checkpoint {folder} has no {CONFIG_FILE}, so its model cannot be rebuilt. "
                f"{delete_hint(folder)}"
            )
        command = train_command(expected) if expected is not None else "robustdc train"
        raise CheckpointNotFoundError(
            f"no checkpoint in {folder}; train it with: {command}", path=folder, command=command
        )

    if expected is not None:
        check_matches(info, expected)
        if info.epochs_completed < expected.epochs:
            command = train_command(expected)
            raise CheckpointNotFoundError(
                f"checkpoint {folder} has {info.epochs_completed} of {expected.epochs} "
                f"epochs; finish it with: {command}",
                path=folder,
                command=command,
            )
    if info.epochs_completed == 0:
        raise CheckpointNotFoundError(
            f"checkpoint {folder} has no finished epoch yet; train it with: "
            f"{train_command(info.config)}",
            path=folder,
            command=train_command(info.config),
        )
    if not info.finished:
        logger.warning(
            "checkpoint %s is unfinished: %d of %d epochs",
            folder,
            info.epochs_completed,
            info.config.epochs,
        )

    model_path = folder / MODEL_FILE
    state_dict = load_torch_file(model_path, device)
    model = build_model_from_config(info.config)
    load_state_dict_into(model, state_dict, model_path)
    model.to(device).eval()
    return model, dataclasses.replace(info.config, epochs=info.epochs_completed)
