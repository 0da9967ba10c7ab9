"""The protocol of Liu et al. (2018), ``robustdc.reproduce``, at a tiny size on real CIFAR-10.

The pipeline is the ``cpu`` preset's with a few training batches per model and a few
test images per attack, so that it fits the default test run.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import pytest

from robustdc.cli import main, reproduce_cmd
from robustdc.evaluation import Evaluator
from robustdc.reproduce import PRESETS, checkpoint_names, protocol_table, run_protocol

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_preset():
    cpu = PRESETS["cpu"]
    return cpu.replace(
        train_overrides={
            **cpu.train_overrides,
            "width": 0.125,
            "epochs": 1,
            "lr_milestones": (),
            "train_limit": 256,
            "batch_size": 64,
        },
        n_examples=16,
        deepfool_examples=8,
        autoattack_examples=4,
        features_dataset="mnist-sample",
        features_overrides={"epochs": 1, "train_limit": 256, "batch_size": 64},
        features_examples=200,
    )


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not (SHARED_DATA / "cifar10").is_dir():
        pytest.skip(f"real CIFAR-10 files not found in {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def first_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("reproduce")
    preset = tiny_preset()
    report = run_protocol(
        preset,
        workdir,
        data_dir=data_dir,
        progress=False,
        draw_features=reproduce_cmd.draw_features,
        write_report=functools.partial(
            reproduce_cmd.write_report,
            out=workdir / "report.html",
            command_line="robustdc reproduce --preset cpu",
        ),
    )
    return preset, workdir, report


def test_tiny_run_fills_every_table_cell(first_run) -> None:
    preset, _, report = first_run
    results = report.results
    names = checkpoint_names(preset)

    table = protocol_table(results, preset)

    assert len(table) == len(preset.trainings) * 9
    for line in table.to_dict("records"):
        for operator in preset.operators:
            if not math.isnan(line[operator]):
                continue
            # A DeepFool median over no fooled example is NaN, which is right only when
            # the tiny model classified none of the DeepFool examples correctly.
            assert line["measure"].startswith("DeepFool"), f"{line} {operator}"
            rows = results[
                (results["checkpoint"] == names[(operator, line["training"])])
                & (results["attack"] == "deepfool")
            ]
            assert len(rows) == 2
            assert (rows["n_clean_correct"] == 0).all()


def test_tiny_run_draws_features_and_report(first_run) -> None:
    preset, workdir, report = first_run

    assert [path.suffix for path in report.figures] == [".png", ".svg"]
    assert report.report_path == workdir / "report.html"
    html = report.report_path.read_text()
    assert "features-mnist-sample" in html or "2-d features" in html
    for line in preset.reductions():
        assert line.split(":")[0] in html
    assert html.count("data:image/png;base64,") >= 3


def test_tiny_run_writes_one_row_per_evaluation(first_run) -> None:
    preset, _, report = first_run
    # Per training and operator: FGSM and BIM white-box and transfer, DeepFool L2 and
    # Linf, AutoAttack.
    expected = len(preset.trainings) * len(preset.operators) * 7

    assert len(report.rows) == expected
    assert len(report.results) == expected


def test_tiny_run_trains_a_separate_transfer_source(first_run) -> None:
    preset, _, report = first_run
    targets = set(checkpoint_names(preset).values())
    sources = set(report.trained) - targets

    assert targets <= set(report.trained)
    assert len(sources) == len(preset.trainings)
    transfer = report.results[report.results["kind"] == "transfer"]
    assert set(transfer["source"]) == {f"baseline-seed{preset.transfer_seed}"}


def test_rerun_reuses_models_and_rows(first_run, data_dir: Path) -> None:
    preset, workdir, report = first_run

    again = run_protocol(preset, workdir, data_dir=data_dir, progress=False)

    assert again.rows == []
    assert again.trained == []
    assert len(again.reused) == len(report.rows)


def test_interrupted_run_continues(data_dir: Path, tmp_path: Path) -> None:
    preset = tiny_preset().replace(
        operators=("baseline", "tanhconv"), trainings=("natural",), autoattack_examples=2
    )
    calls = 0
    original = Evaluator.evaluate

    def interrupt(self, request):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return original(self, request)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Evaluator, "evaluate", interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_protocol(preset, tmp_path, data_dir=data_dir, progress=False)

    resumed = run_protocol(preset, tmp_path, data_dir=data_dir, progress=False)

    # The first request (baseline, FGSM and BIM) finished before the interruption.
    assert len(resumed.reused) == 4
    assert len(resumed.rows) == 2 * 7 - 4
    assert resumed.trained == [checkpoint_names(preset)[("tanhconv", "natural")]]


BAD_INPUTS = [
    (["--preset", "gpu"], "unknown --preset 'gpu'"),
    (["--out", "OUT/report.pdf"], "is not an .html file"),
    (["--out", "FILE/report.html"], "FILE is a file, not a folder"),
    (["--workdir", "FILE"], "--workdir .*FILE is a file, not a folder"),
    (["--seed", "-1"], r"seed '-1' is outside \[0, 4294967295\]"),
    (["--device", "tpu"], "invalid --device 'tpu'"),
    (["--data-dir", "OUT/missing"], "--data-dir .*missing is not a folder"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS, ids=lambda v: str(v))
def test_bad_input_fails_before_training(extra, message, tmp_path, capsys) -> None:
    (tmp_path / "FILE").write_text("not a folder")
    extra = [item.replace("OUT", str(tmp_path / "out")) for item in extra]
    extra = [item.replace("FILE", str(tmp_path / "FILE")) for item in extra]
    arguments = ["reproduce", "--workdir", str(tmp_path / "runs"), "--device", "cpu", *extra]

    with pytest.raises(SystemExit) as raised:
        main(arguments)

    assert raised.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 or "usage:" in error
    assert re.search(message, error), error
    assert not (tmp_path / "runs").exists()
    assert (tmp_path / "FILE").read_text() == "not a folder"
    assert not (tmp_path / "out").exists()
