"""End-to-end tests of ``robustdc evaluate`` and ``robustdc list results``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from robustdc.cli import main
from robustdc.results import ResultsStore

MAIN_COMMAND = ["evaluate", "--model", "tanhconv", "--attack", "bim"]


@pytest.fixture(scope="module")
def main_run(tmp_path_factory) -> tuple[Path, str]:
    """The product's main command, run once from an empty workdir."""
    workdir = tmp_path_factory.mktemp("main") / "runs"
    command = [sys.executable, "-m", "robustdc", *MAIN_COMMAND, "--workdir", str(workdir)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr
    return workdir, completed.stdout + completed.stderr


@pytest.fixture
def trained(main_run, tmp_path) -> Path:
    """A fresh workdir with the main command's trained tanhconv checkpoint."""
    workdir = tmp_path / "runs"
    shutil.copytree(main_run[0] / "models", workdir / "models")
    return workdir


def test_main_command_from_empty_workdir(main_run):
    workdir, output = main_run
    assert "training cnn9-tanhconv-cosine-natural" in output
    assert "bim" in output
    assert f"results: {workdir / 'results.csv'}" in output
    frame = ResultsStore(workdir).read()
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["attack"] == "bim"
    assert row["clean_accuracy"] > 0.9
    assert row["robust_accuracy"] < row["clean_accuracy"]
    assert row["fgsm_robust_accuracy"] >= row["robust_accuracy"]


def test_rerun_reuses_rows(trained, capsys):
    arguments = ["evaluate", "--model", "tanhconv", "--attack", "fgsm", "--epsilon", "0.1"]
    arguments += ["--workdir", str(trained), "--n-examples", "100", "--no-train"]
    assert main(arguments) == 0
    assert main(arguments) == 0
    output = capsys.readouterr().out
    assert "1 row(s) reused from the results file" in output
    assert len(ResultsStore(trained).read()) == 1


def test_list_results_and_export(trained, capsys, tmp_path):
    arguments = ["evaluate", "--model", "tanhconv", "--attack", "fgsm", "--epsilon", "0.1,0.2"]
    arguments += ["--workdir"]
    assert main([*arguments, str(trained), "--n-examples", "50", "--no-train"]) == 0
    capsys.readouterr()
    export = tmp_path / "out.csv"
    assert main(["list", "results", "--workdir", str(trained), "--export", str(export)]) == 0
    output = capsys.readouterr().out
    assert "mnist-sample / tanhconv / natural" in output
    assert "2 row(s)" in output
    assert len(pd.read_csv(export)) == 2


def test_sigkill_keeps_finished_rows(trained):
    command = [sys.executable, "-m", "robustdc", *MAIN_COMMAND[:3], "--attack", "fgsm"]
    command += ["--epsilon", "0.05,0.1,0.15,0.2,0.25,0.3", "--n-examples", "100"]
    command += ["--workdir", str(trained), "--no-train"]
    results = trained / "results.csv"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if results.exists() and len(ResultsStore(trained).read()) >= 2:
                break
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    finished = ResultsStore(trained).read()
    assert 2 <= len(finished) < 6
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr
    assert f"{len(finished)} row(s) reused" in completed.stdout
    final = ResultsStore(trained).read()
    assert len(final) == 6
    kept = final.set_index("epsilon").loc[finished["epsilon"], "created"]
    assert list(kept) == list(finished["created"])


BAD_INPUTS = [
    (["--model", "tanhconvv"], "unknown model 'tanhconvv'.*did you mean 'tanhconv'"),
    (["--attack", "bimm"], "unknown attack 'bimm'.*did you mean 'bim'"),
    (["--suite", "nosuch"], "nosuch"),
    (["--epsilon", "8/0"], "invalid epsilon '8/0'"),
    (["--epsilon", "abc"], "invalid epsilon 'abc'"),
    (["--epsilon", "-0.1"], r"epsilon '-0.1' is outside \[0, 1\]"),
    (["--epsilon", "8"], r"epsilon '8' is outside \[0, 1\].*did you mean 8/255"),
    (["--n-examples", "0"], "expected an integer >= 1, got '0'"),
    (["--training", "adversarial"], "unknown training 'adversarial'"),
    (["--transfer-from", "basline"], "did you mean 'baseline'"),
    (["--device", "tpu"], "invalid --device 'tpu'"),
    (
        ["--attack", "autoattack"],
        "autoattack is not in the attack suite 'default'.*--epsilon.*--suite strong",
    ),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS, ids=lambda v: str(v))
def test_bad_input_one_line_error(extra, message, tmp_path, capsys):
    arguments = ["evaluate", "--model", "tanhconv", "--attack", "bim", "--workdir"]
    arguments += [str(tmp_path / "runs"), *extra]
    with pytest.raises(SystemExit) as raised:
        main(arguments)
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 or "usage:" in error
    assert re.search(message, error), error
    assert not (tmp_path / "runs" / "models").exists()


def test_foreign_results_file_rejected_untouched(tmp_path, capsys):
    workdir = tmp_path / "runs"
    workdir.mkdir()
    foreign = workdir / "results.csv"
    foreign.write_text("name,score\nalice,3\n")
    arguments = [*MAIN_COMMAND, "--workdir", str(workdir)]
    with pytest.raises(SystemExit) as raised:
        main(arguments)
    assert raised.value.code == 2
    assert str(foreign) in capsys.readouterr().err
    assert foreign.read_text() == "name,score\nalice,3\n"
    assert not (workdir / "models").exists()


def test_attack_outside_suite_takes_epsilon():
    from robustdc.cli import build_parser
    from robustdc.cli.evaluate_cmd import _specs

    arguments = [
        "evaluate",
        "--model",
        "tanhconv",
        "--attack",
        "autoattack",
        "--epsilon",
        "0.1,0.2",
    ]
    specs = _specs(build_parser().parse_args(arguments))

    assert [spec.name for spec in specs] == ["autoattack", "autoattack"]
    assert [spec.epsilon for spec in specs] == pytest.approx([0.1, 0.2])
