"""Per-sample perturbation norms of one result row, stored as a ``.npz`` file.

The file contains four arrays: ``l2`` and ``linf`` (float64, one norm per sample),
``fooled`` (bool) and ``key`` (the row key as JSON text), so it loads with
``numpy.load(path, allow_pickle=False)`` and can be matched to its row.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from robustdc.results.errors import ResultsFileError
from robustdc.results.schema import KEY_COLUMNS
from robustdc.results.table import RowKey, describe_key

_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")


@dataclass(frozen=True)
class SampleNorms:
    """Per-sample norms of one evaluation.

    Attributes:
        l2: float64 (N,) L2 norms of ``x_adv - x``.
        linf: float64 (N,) Linf norms.
        fooled: bool (N,), whether the attack flipped each sample.
    """

    l2: np.ndarray
    linf: np.ndarray
    fooled: np.ndarray


def file_name(key: RowKey) -> str:
    """Return a readable, collision-free file name for a normalized key.

    The readable part keeps letters, digits, ``.``, ``+`` and ``-`` of each key value.
    A hash of the exact key makes names unique even when two keys read alike.
    """
    readable = "_".join(_UNSAFE.sub("-", "none" if value is None else str(value)) for value in key)
    digest = hashlib.sha256(_key_json(key).encode("utf-8")).hexdigest()[:12]
    return f"{readable}__{digest}.npz"


def pack(key: RowKey, l2: Any, linf: Any, fooled: Any) -> dict[str, np.ndarray]:
    """Validate the arrays of one row and return them ready for :func:`write`.

    Raises:
        ValueError: arrays that are not 1-D, differ in length, or hold non-finite or
            negative norms.
    """
    arrays = {
        "l2": np.asarray(l2, dtype=np.float64),
        "linf": np.asarray(linf, dtype=np.float64),
        "fooled": np.asarray(fooled),
    }
    for name, array in arrays.items():
        if array.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"l2, linf and fooled must have one length, got {lengths}")
    if arrays["fooled"].dtype != np.bool_:
        raise ValueError(f"fooled must be a bool array, got dtype {arrays['fooled'].dtype}")
    for name in ("l2", "linf"):
        # NaN is allowed: it marks samples without a meaningful norm.
        if (arrays[name] < 0).any() or np.isinf(arrays[name]).any():
            raise ValueError(f"{name} norms must be >= 0 and finite or NaN")
    arrays["key"] = np.array(_key_json(key))
    return arrays


def write(file: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    """Write packed arrays as an uncompressed ``.npz`` into an open binary file."""
    np.savez(file, **arrays)


def read(path: Path, key: RowKey) -> SampleNorms:
    """Load the norms stored at ``path`` and check that they belong to ``key``.

    Raises:
        ResultsFileError: the file is not a norms file or contains another key.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            stored_key = str(data["key"])
            norms = SampleNorms(
                l2=data["l2"].astype(np.float64),
                linf=data["linf"].astype(np.float64),
                fooled=data["fooled"].astype(bool),
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ResultsFileError(
            f"{path} is not a per-sample norms file ({err}); move it away and re-run the evaluation"
        ) from err
    if stored_key != _key_json(key):
        raise ResultsFileError(
            f"{path} contains norms of another row (key {stored_key}), expected "
            f"{describe_key(key)}; move it away and re-run the evaluation"
        )
    return norms


def _key_json(key: RowKey) -> str:
    return json.dumps(dict(zip(KEY_COLUMNS, key, strict=True)), sort_keys=True)
