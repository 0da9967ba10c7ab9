"""Tests of the results table: schema, CSV store, atomic and concurrent writes, samples."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustdc.results import (
    COLUMN_NAMES,
    COLUMNS,
    DTYPES,
    KEY_COLUMNS,
    AppendResult,
    ResultsFileError,
    ResultsStore,
    concat_frames,
    empty_frame,
    normalize_key,
    rows_to_frame,
    runtime_versions,
)

KEY = {
    "dataset": "mnist",
    "arch": "cnn9",
    "model": "tanhconv",
    "angular": "cosine",
    "training": "natural",
    "attack": "bim",
    "norm": "linf",
    "epsilon": 8 / 255,
    "kind": "white-box",
    "source": "",
    "seed": 0,
    "checkpoint": "cnn9-tanhconv-cosine-natural",
}
DEEPFOOL_KEY = {**KEY, "attack": "deepfool", "norm": "l2", "epsilon": None, "kind": "minimum-norm"}

# A child process that appends one row per loop iteration and reports each finished
# append on stdout. argv: workdir, model name, number of rows (0 = until killed).
APPEND_LOOP = textwrap.dedent(
    """
    import sys
    from robustdc.results import ResultsStore

    store = ResultsStore(sys.argv[1])
    model, count = sys.argv[2], int(sys.argv[3])
    seed = 0
    while count == 0 or seed < count:
        row = {
            "dataset": "mnist", "arch": "cnn9", "model": model, "angular": "cosine",
            "training": "natural",
            "attack": "pgd", "norm": "linf", "epsilon": 0.3, "kind": "white-box",
            "source": "", "seed": seed, "checkpoint": "c", "robust_accuracy": seed / 1000,
            "attack_settings": {"padding": "x" * 2000},
        }
        store.append([row])
        print(seed, flush=True)
        seed += 1
    """
)

# A child process that appends 3 rows, then stops in the middle of writing the 4th:
# it writes half the CSV text, flushes it to the file, reports "writing" on stdout
# and waits to be killed. argv: workdir.
STOP_MID_WRITE = textwrap.dedent(
    """
    import io, os, sys, time
    import robustdc.results.store as store_module
    from robustdc.results import ResultsStore

    def row(seed):
        return {
            "dataset": "mnist", "arch": "cnn9", "model": "m", "angular": "cosine",
            "training": "natural",
            "attack": "pgd", "norm": "linf", "epsilon": 0.3, "kind": "white-box",
            "source": "", "seed": seed, "checkpoint": "c",
        }

    store = ResultsStore(sys.argv[1])
    for seed in range(3):
        store.append([row(seed)])
    original = store_module.write_csv

    def write_half_then_wait(frame, file):
        text = io.StringIO()
        original(frame, text)
        file.write(text.getvalue()[: len(text.getvalue()) // 2])
        file.flush()
        os.fsync(file.fileno())
        print("writing", flush=True)
        while True:
            time.sleep(1)

    store_module.write_csv = write_half_then_wait
    store.append([row(3)])
    """
)


def make_row(**changes: object) -> dict[str, object]:
    return {**KEY, "clean_accuracy": 0.99, "robust_accuracy": 0.25, "n_examples": 100, **changes}


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path / "runs")


# Schema.


def test_schema_key_columns():
    assert KEY_COLUMNS == (
        "dataset",
        "arch",
        "model",
        "angular",
        "training",
        "attack",
        "norm",
        "epsilon",
        "kind",
        "source",
        "seed",
        "checkpoint",
    )


def test_schema_names_unique():
    assert len(COLUMN_NAMES) == len(COLUMNS)
    assert set(DTYPES) == set(COLUMN_NAMES)


@pytest.mark.parametrize(
    "column",
    [
        "clean_accuracy",
        "robust_accuracy",
        "attack_success_rate",
        "l2_median",
        "l2_mean",
        "l2_p10",
        "l2_p90",
        "linf_median",
        "linf_mean",
        "linf_p10",
        "linf_p90",
        "seconds",
        "fgsm_robust_accuracy",
        "bim_robust_accuracy",
        "large_epsilon_robust_accuracy",
        "zero_gradient_fraction",
        "deepfool_success_rate",
        "transfer_robust_accuracy",
    ],
)
def test_schema_float_columns(column):
    assert DTYPES[column] == "float64"


def test_empty_frame_dtypes():
    frame = empty_frame()
    assert list(frame.columns) == list(COLUMN_NAMES)
    assert frame["epsilon"].dtype == np.float64
    assert frame["seed"].dtype == np.int64
    assert str(frame["n_examples"].dtype) == "Int64"
    assert pd.api.types.is_string_dtype(frame["dataset"])


def test_runtime_versions_keys():
    versions = runtime_versions()
    assert set(versions) == {"robustdc_version", "torch_version"}
    assert versions["torch_version"] != ""


# Reading and appending.


def test_read_missing_file_is_empty(store):
    frame = store.read()
    assert frame.empty
    assert list(frame.columns) == list(COLUMN_NAMES)
    assert not store.path.exists()


def test_append_read_roundtrip(store):
    result = store.append([make_row(), make_row(seed=1, robust_accuracy=0.5)])
    assert result == AppendResult(added=2, replaced=0, skipped=0)

    frame = store.read()
    assert len(frame) == 2
    assert frame["epsilon"].dtype == np.float64
    assert frame["robust_accuracy"].dtype == np.float64
    assert frame["seed"].dtype == np.int64
    assert frame["seed"].tolist() == [0, 1]
    assert frame["robust_accuracy"].tolist() == [0.25, 0.5]
    # The float written is the float read back, bit for bit.
    assert frame["epsilon"].tolist() == [8 / 255, 8 / 255]
    assert frame["n_examples"].tolist() == [100, 100]


def test_append_fills_missing_values(store):
    store.append([KEY])
    row = store.read().iloc[0]
    assert math.isnan(row["robust_accuracy"])
    assert row["n_not_fooled"] is pd.NA
    assert row["attack_settings"] == "{}"
    assert row["warnings"] == "[]"
    assert row["library"] == ""
    assert row["source"] == ""


def test_append_sets_created(store):
    store.append([KEY])
    created = store.read().iloc[0]["created"]
    assert pd.Timestamp(created).tzinfo is not None


def test_append_serializes_json_columns(store):
    store.append([make_row(attack_settings={"steps": 10, "alpha": 0.1}, warnings=["weak"])])
    row = store.read().iloc[0]
    assert json.loads(row["attack_settings"]) == {"alpha": 0.1, "steps": 10}
    assert json.loads(row["warnings"]) == ["weak"]


def test_append_accepts_dataframe(store):
    store.append(pd.DataFrame([make_row(), make_row(seed=3)]))
    assert store.read()["seed"].tolist() == [0, 3]


def test_append_accepts_numpy_scalars(store):
    store.append([make_row(robust_accuracy=np.float32(0.5), seed=np.int64(4))])
    row = store.read().iloc[0]
    assert row["robust_accuracy"] == 0.5
    assert row["seed"] == 4


def test_append_minimum_norm_row(store):
    store.append([{**DEEPFOOL_KEY, "n_not_fooled": 2}])
    row = store.read().iloc[0]
    assert math.isnan(row["epsilon"])
    assert row["n_not_fooled"] == 2


def test_append_keeps_earlier_rows(store):
    store.append([make_row(seed=0)])
    store.append([make_row(seed=1)])
    store.append([make_row(seed=2)])
    assert store.read()["seed"].tolist() == [0, 1, 2]


def test_append_existing_key_skipped(store):
    store.append([make_row(robust_accuracy=0.25)])
    result = store.append([make_row(robust_accuracy=0.75)])
    assert result == AppendResult(added=0, replaced=0, skipped=1)
    assert store.read()["robust_accuracy"].tolist() == [0.25]


def test_append_replace_overwrites_row(store):
    store.append([make_row(seed=0), make_row(seed=1, robust_accuracy=0.25)])
    result = store.append([make_row(seed=1, robust_accuracy=0.75)], replace=True)
    assert result == AppendResult(added=0, replaced=1, skipped=0)
    frame = store.read()
    assert frame["seed"].tolist() == [0, 1]
    assert frame["robust_accuracy"].tolist() == [0.25, 0.75]


def test_append_replace_adds_new_keys(store):
    store.append([make_row(seed=0)])
    result = store.append([make_row(seed=0), make_row(seed=1)], replace=True)
    assert result == AppendResult(added=1, replaced=1, skipped=0)
    assert len(store.read()) == 2


def test_append_empty_writes_nothing(store):
    assert store.append([]) == AppendResult(added=0, replaced=0, skipped=0)
    assert not store.path.exists()


def test_append_leaves_no_temporary_files(store):
    store.append([make_row()])
    store.append([make_row(seed=1)])
    assert sorted(path.name for path in store.workdir.iterdir()) == [
        "results.csv",
        "results.csv.lock",
    ]


def test_append_removes_stale_temporary(store):
    store.append([make_row()])
    stale = store.workdir / ".results.csv.abc123.tmp"
    stale.write_text("half a row")
    store.append([make_row(seed=1)])
    assert not stale.exists()


@pytest.mark.parametrize(
    ("row", "match"),
    [
        pytest.param(make_row(robust_acc=0.5), "unknown column.*robust_acc", id="unknown-column"),
        pytest.param({k: v for k, v in KEY.items() if k != "model"}, "model", id="missing-key"),
        pytest.param(make_row(model=""), "model must be a non-empty", id="empty-key"),
        pytest.param(make_row(kind="gray-box"), "white-box, transfer, minimum-norm", id="kind"),
        pytest.param(make_row(robust_accuracy="0.5"), "must be a number", id="float-as-text"),
        pytest.param(make_row(robust_accuracy=True), "must be a number", id="float-as-bool"),
        pytest.param(make_row(seed=1.5), "must be an integer", id="fractional-seed"),
        pytest.param(make_row(seed=None), "seed is required", id="missing-seed"),
        pytest.param(make_row(n_examples="100"), "must be an integer", id="count-as-text"),
        pytest.param(make_row(library=3), "must be a string", id="text-as-number"),
        pytest.param(make_row(warnings="[unclosed"), "not valid JSON", id="bad-json"),
        pytest.param(make_row(attack_settings={"x": object()}), "JSON", id="unserializable"),
    ],
)
def test_append_rejects_invalid_row(store, row, match):
    with pytest.raises(ValueError, match=match):
        store.append([row])
    assert not store.path.exists()


def test_append_rejects_duplicate_keys_in_one_call(store):
    with pytest.raises(ValueError, match="rows 0 and 1 have the same key"):
        store.append([make_row(), make_row(robust_accuracy=0.1)])


def test_rows_to_frame_dtypes():
    frame = rows_to_frame([make_row()])
    for name, dtype in DTYPES.items():
        if dtype == "str":
            assert pd.api.types.is_string_dtype(frame[name]), name
        else:
            assert str(frame[name].dtype) == dtype, name


def test_concat_frames_keeps_extra_columns():
    first = rows_to_frame([make_row()])
    first["note"] = ["kept"]
    combined = concat_frames([first, rows_to_frame([make_row(seed=1)])])
    assert combined["note"].tolist() == ["kept", ""]
    assert combined["seed"].dtype == np.int64


# Keys.


def test_has_finds_rows(store):
    store.append([make_row(), {**DEEPFOOL_KEY}])
    assert store.has(KEY)
    assert store.has(DEEPFOOL_KEY)
    assert store.has({**DEEPFOOL_KEY, "epsilon": math.nan})
    assert not store.has({**KEY, "seed": 1})
    assert not store.has({**KEY, "epsilon": 0.0314})


def test_has_accepts_whole_row(store):
    store.append([make_row()])
    assert store.has(make_row(robust_accuracy=0.9))


def test_has_rejects_partial_key(store):
    with pytest.raises(ValueError, match="key is missing seed"):
        store.has({k: v for k, v in KEY.items() if k != "seed"})


def test_normalize_key_nan_epsilon():
    assert normalize_key(DEEPFOOL_KEY) == normalize_key({**DEEPFOOL_KEY, "epsilon": float("nan")})


# Files that are not ours.

NOT_OURS = {
    "garbage-bytes": bytes(range(256)) * 4,
    "other-csv": b"name,score\nalice,3\n",
    "empty": b"",
    "text-in-number-column": (
        ",".join(COLUMN_NAMES) + "\n" + "mnist,cnn9,m,natural,bim,linf,abc,white-box,,0"
    ).encode(),
}


@pytest.mark.parametrize("content", list(NOT_OURS.values()), ids=list(NOT_OURS))
def test_foreign_file_rejected(store, content):
    store.workdir.mkdir(parents=True)
    store.path.write_bytes(content)

    with pytest.raises(ResultsFileError, match="results.csv") as excinfo:
        store.read()
    assert "move it away" in str(excinfo.value)
    with pytest.raises(ResultsFileError):
        store.append([make_row()])
    with pytest.raises(ResultsFileError):
        store.has(KEY)
    assert store.path.read_bytes() == content


def test_foreign_file_message_names_columns(store):
    store.workdir.mkdir(parents=True)
    store.path.write_text("name,score\nalice,3\n")
    with pytest.raises(ResultsFileError, match="missing columns: dataset, arch"):
        store.read()


def test_old_file_without_new_column_loads(store):
    store.append([make_row()])
    frame = pd.read_csv(store.path, dtype=str, keep_default_na=False)
    frame.drop(columns=["transfer_robust_accuracy", "n_not_fooled"]).to_csv(store.path, index=False)
    row = store.read().iloc[0]
    assert math.isnan(row["transfer_robust_accuracy"])
    assert row["n_not_fooled"] is pd.NA
    assert row["robust_accuracy"] == 0.25


def test_unknown_file_columns_preserved(store):
    store.append([make_row()])
    frame = pd.read_csv(store.path, dtype=str, keep_default_na=False)
    frame["note"] = "from a newer version"
    frame.to_csv(store.path, index=False)

    store.append([make_row(seed=1)])
    assert store.read()["note"].tolist() == ["from a newer version", ""]


# Export.


def test_export_csv(store, tmp_path):
    store.append([make_row(), {**DEEPFOOL_KEY}])
    target = store.export(tmp_path / "out" / "table.csv")
    exported = pd.read_csv(target)
    assert len(exported) == 2
    assert exported["robust_accuracy"].iloc[0] == 0.25


def test_export_parquet(store, tmp_path):
    store.append([make_row()])
    target = tmp_path / "table.parquet"
    engines = [name for name in ("pyarrow", "fastparquet") if _importable(name)]
    if not engines:
        with pytest.raises(ImportError, match="pyarrow or fastparquet"):
            store.export(target)
        assert not target.exists()
        return
    store.export(target)
    assert pd.read_parquet(target)["robust_accuracy"].tolist() == [0.25]


@pytest.mark.parametrize("name", ["table.xlsx", "table.json", "table"])
def test_export_rejects_suffix(store, tmp_path, name):
    with pytest.raises(ValueError, match=r"expected one of: \.csv, \.parquet"):
        store.export(tmp_path / name)


def test_export_onto_itself_rejected(store):
    store.append([make_row()])
    with pytest.raises(ValueError, match="onto itself"):
        store.export(store.path)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# Per-sample norms.


def test_sample_norms_roundtrip(store):
    l2 = np.array([0.5, 1.25, np.nan])
    linf = np.array([0.1, 0.2, np.nan])
    fooled = np.array([True, True, False])
    path = store.save_sample_norms(DEEPFOOL_KEY, l2, linf, fooled)

    assert path.parent == store.samples_dir
    assert path.suffix == ".npz"
    norms = store.load_sample_norms({**DEEPFOOL_KEY, "epsilon": math.nan})
    np.testing.assert_array_equal(norms.l2, l2)
    np.testing.assert_array_equal(norms.linf, linf)
    np.testing.assert_array_equal(norms.fooled, fooled)
    assert norms.fooled.dtype == np.bool_


def test_sample_norms_loadable_without_pickle(store):
    path = store.save_sample_norms(DEEPFOOL_KEY, [0.5], [0.1], np.array([True]))
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["fooled", "key", "l2", "linf"]


def test_sample_norms_accept_tensors(store):
    torch = pytest.importorskip("torch")
    store.save_sample_norms(
        DEEPFOOL_KEY, torch.tensor([0.5]), torch.tensor([0.1]), torch.tensor([True])
    )
    assert store.load_sample_norms(DEEPFOOL_KEY).l2.tolist() == [0.5]


def test_sample_norms_distinct_keys(store):
    store.save_sample_norms(DEEPFOOL_KEY, [1.0], [0.1], np.array([True]))
    other = {**DEEPFOOL_KEY, "norm": "linf"}
    store.save_sample_norms(other, [2.0], [0.2], np.array([False]))
    assert store.load_sample_norms(DEEPFOOL_KEY).l2.tolist() == [1.0]
    assert store.load_sample_norms(other).l2.tolist() == [2.0]
    assert store.sample_path(DEEPFOOL_KEY) != store.sample_path(other)


def test_sample_norms_overwrite_leaves_no_temporaries(store):
    store.save_sample_norms(DEEPFOOL_KEY, [1.0], [0.1], np.array([True]))
    store.save_sample_norms(DEEPFOOL_KEY, [3.0], [0.3], np.array([True]))
    assert store.load_sample_norms(DEEPFOOL_KEY).l2.tolist() == [3.0]
    assert [path.name for path in store.samples_dir.iterdir()] == [
        store.sample_path(DEEPFOOL_KEY).name
    ]


def test_sample_norms_missing(store):
    with pytest.raises(FileNotFoundError, match="no per-sample norms"):
        store.load_sample_norms(DEEPFOOL_KEY)


def test_sample_norms_wrong_key_detected(store):
    path = store.save_sample_norms(DEEPFOOL_KEY, [1.0], [0.1], np.array([True]))
    other = {**DEEPFOOL_KEY, "seed": 5}
    os.replace(path, store.sample_path(other))
    with pytest.raises(ResultsFileError, match="another row"):
        store.load_sample_norms(other)


def test_sample_norms_garbage_detected(store):
    store.samples_dir.mkdir(parents=True)
    store.sample_path(DEEPFOOL_KEY).write_bytes(b"not a zip file")
    with pytest.raises(ResultsFileError, match="not a per-sample norms file"):
        store.load_sample_norms(DEEPFOOL_KEY)


@pytest.mark.parametrize(
    ("l2", "linf", "fooled", "match"),
    [
        pytest.param([1.0, 2.0], [0.1], [True, True], "one length", id="lengths"),
        pytest.param([[1.0]], [0.1], [True], "1-D", id="2d"),
        pytest.param([1.0], [0.1], [1], "bool", id="fooled-int"),
        pytest.param([-1.0], [0.1], [True], ">= 0", id="negative"),
        pytest.param([np.inf], [0.1], [True], "finite", id="infinite"),
    ],
)
def test_sample_norms_rejects_invalid(store, l2, linf, fooled, match):
    with pytest.raises(ValueError, match=match):
        store.save_sample_norms(DEEPFOOL_KEY, l2, linf, np.array(fooled))


# Processes.


def _spawn_append_loop(workdir: Path, model: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APPEND_LOOP, str(workdir), model, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_during_appends_keeps_rows(store):
    process = _spawn_append_loop(store.workdir, "killed", 0)
    finished = -1
    try:
        # Wait for 30 reported appends: the child then spends most of its time
        # rewriting the file, so the kill most likely lands inside a write.
        while finished < 30:
            line = process.stdout.readline()
            assert line, f"child exited early: {process.stderr.read()}"
            finished = int(line)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
        process.stderr.close()

    assert process.returncode == -signal.SIGKILL
    seeds = store.read()["seed"].tolist()
    # Every reported append is there, in order. The append in flight may be missing.
    assert seeds[: finished + 1] == list(range(finished + 1))
    assert len(seeds) in (finished + 1, finished + 2)
    # The next append cleans up and succeeds.
    store.append([make_row(model="after-kill")])
    assert len(store.read()) == len(seeds) + 1


def test_sigkill_mid_write_keeps_rows(store):
    process = subprocess.Popen(
        [sys.executable, "-c", STOP_MID_WRITE, str(store.workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line == "writing\n", f"child failed: {process.stderr.read()}"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
        process.stderr.close()

    assert store.read()["seed"].tolist() == [0, 1, 2]
    store.append([make_row(model="after-kill")])
    assert len(store.read()) == 4
    assert not list(store.workdir.glob("*.tmp"))


def test_concurrent_appends_lose_no_rows(store):
    rows_each = 15
    processes = [_spawn_append_loop(store.workdir, name, rows_each) for name in ("a", "b")]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr

    frame = store.read()
    assert len(frame) == 2 * rows_each
    for name in ("a", "b"):
        assert sorted(frame.loc[frame["model"] == name, "seed"]) == list(range(rows_each))


def test_results_imports_no_other_robustdc_package():
    code = (
        "import sys, robustdc.results; "
        "print(sorted(m for m in sys.modules if m.startswith('robustdc.') "
        "and not m.startswith('robustdc.results')))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
