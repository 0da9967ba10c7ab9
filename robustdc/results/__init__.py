"""The results table: one row per evaluated (model, attack) pair, stored as CSV.

This package imports nothing else from robustdc, so it does not depend on models,
attacks or the command line. The schema lives in :mod:`robustdc.results.schema`.

Example::

    from robustdc.results import ResultsStore

    store = ResultsStore("runs")
    key = {"dataset": "mnist", "arch": "cnn9", "model": "tanhconv", "angular": "cosine",
           "training": "natural", "attack": "bim", "norm": "linf", "epsilon": 0.3,
           "kind": "white-box", "source": "", "seed": 0}
    if not store.has(key):
        store.append([{**key, "clean_accuracy": 0.99, "robust_accuracy": 0.02}])
    frame = store.read()
"""

from robustdc.results.errors import ResultsFileError
from robustdc.results.samples import SampleNorms
from robustdc.results.schema import (
    COLUMN_KINDS,
    COLUMN_NAMES,
    COLUMNS,
    COLUMNS_BY_NAME,
    DTYPES,
    EVALUATION_KINDS,
    KEY_COLUMNS,
    Column,
)
from robustdc.results.store import EXPORT_SUFFIXES, RESULTS_FILE, AppendResult, ResultsStore
from robustdc.results.table import (
    concat_frames,
    empty_frame,
    normalize_key,
    rows_to_frame,
    runtime_versions,
)

__all__ = [
    "COLUMNS",
    "COLUMNS_BY_NAME",
    "COLUMN_KINDS",
    "COLUMN_NAMES",
    "DTYPES",
    "EVALUATION_KINDS",
    "EXPORT_SUFFIXES",
    "KEY_COLUMNS",
    "RESULTS_FILE",
    "AppendResult",
    "Column",
    "ResultsFileError",
    "ResultsStore",
    "SampleNorms",
    "concat_frames",
    "empty_frame",
    "normalize_key",
    "rows_to_frame",
    "runtime_versions",
]
