"""End-to-end tests of ``robustdc report`` and ``robustdc features``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic_results import write_workdir

from robustdc.cli import main
from robustdc.plots import DPI, FEATURE_PANEL_SIZE, LEGEND_WIDTH


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli-report") / "runs"
    write_workdir(path)
    return path


def run_error(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line, expect exit status 2 and return its one-line error."""
    with pytest.raises(SystemExit) as raised:
        main(arguments)
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith("robustdc: error: ")
    return error


def test_report_default_path_and_plots(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    plots = tmp_path / "plots"
    assert main(["report", "--workdir", str(workdir), "--plots-dir", str(plots)]) == 0
    output = capsys.readouterr().out
    report = Path("reports") / "mnist-sample.html"
    assert f"report: {report} (" in output
    assert "4 figure(s), 0 sanity-check warning(s)" in output
    html = report.read_text(encoding="utf-8")
    assert html.count("<img ") == 4
    # The report records the command that built it.
    assert f"robustdc report --workdir {workdir} --plots-dir {plots}" in html
    written = sorted(path.name for path in plots.iterdir())
    assert "mnist-sample-robust-accuracy-white-box.png" in written
    assert "mnist-sample-deepfool-norms.svg" in written
    assert len(written) == 8


def test_report_explicit_out_and_filter(workdir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "two.html"
    arguments = ["report", "--workdir", str(workdir), "--models", "baseline,tanhconv"]
    assert main([*arguments, "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert "tanhconv" in html
    assert "sphereconv" not in html
    assert f"report: {out}" in capsys.readouterr().out


def bad_report_cases(tmp_path: Path, workdir: Path) -> dict[str, tuple[list[str], str, Path]]:
    """Map a case id to (arguments, error pattern, folder that must stay empty)."""
    empty = tmp_path / "empty-workdir"
    empty.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    return {
        "empty-results": (
            ["--workdir", str(empty), "--out", str(out / "r.html")],
            r"results table .*results\.csv is empty; run robustdc evaluate first",
            out,
        ),
        "unknown-dataset": (
            ["--workdir", str(workdir), "--dataset", "cifar10", "--out", str(out / "r.html")],
            "no results for dataset.* cifar10 .*datasets with results: mnist-sample",
            out,
        ),
        "unknown-model": (
            ["--workdir", str(workdir), "--models", "logconv", "--out", str(out / "r.html")],
            "no results for model.* logconv .*models with results: baseline, sphereconv",
            out,
        ),
        "empty-models": (["--workdir", str(workdir), "--models", ","], "invalid --models", out),
        "missing-folder": (
            ["--workdir", str(workdir), "--out", str(out / "nosuch" / "r.html")],
            r"cannot write .*r\.html: folder .*nosuch does not exist",
            out,
        ),
        "out-is-folder": (
            ["--workdir", str(workdir), "--out", str(out)],
            "is a folder; give a file name",
            out,
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty-results",
        "unknown-dataset",
        "unknown-model",
        "empty-models",
        "missing-folder",
        "out-is-folder",
    ],
)
def test_report_bad_input(case: str, workdir: Path, tmp_path: Path, capsys) -> None:
    arguments, message, folder = bad_report_cases(tmp_path, workdir)[case]
    error = run_error(["report", *arguments], capsys)
    assert re.search(message, error), error
    assert os.listdir(folder) == []


def test_report_read_only_folder(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        # root ignores permission bits, so raise what mkstemp raises for other users.
        def deny(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(folder))

        monkeypatch.setattr("robustdc.plots.output.tempfile.mkstemp", deny)
    try:
        arguments = ["report", "--workdir", str(workdir), "--out", str(folder / "r.html")]
        error = run_error(arguments, capsys)
        assert re.search(r"cannot write .*r\.html: .*(not writable|permission denied)", error)
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


FEATURES = ["features", "--training", "natural,fgsm"]
TINY = ["--epochs", "1", "--limit", "64", "--n-examples", "100", "--device", "cpu"]


def check_features_run(workdir: Path, models: list[str], output: str) -> None:
    assert f"mnist2d on mnist-sample: {len(models)} model(s) x 2 training(s), each 1 epoch " in (
        output
    )
    assert "on the first 64 training images" in output
    trained = re.findall(r"trained in \d+ s: accuracy \d+\.\d% on 100 test images", output)
    assert len(trained) == 2 * len(models)
    stem = workdir / "plots" / "features-mnist-sample"
    assert f"features: {stem}.png, {stem}.svg" in output
    with Image.open(f"{stem}.png") as image:
        width = 2 * FEATURE_PANEL_SIZE + LEGEND_WIDTH / 2
        height = len(models) * FEATURE_PANEL_SIZE
        assert image.size == (round(width * DPI), round(height * DPI))
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels < 250).any(axis=2).mean() > 0.02
    checkpoints = sorted(path.name for path in (workdir / "models" / "mnist-sample").iterdir())
    expected = [
        f"mnist2d-{model}-{training}"
        if model == "baseline"
        else f"mnist2d-{model}-cosine-{training}"
        for model in models
        for training in ("fgsm", "natural")
    ]
    # The tiny overrides make the configs non-default, so each name ends in a hash.
    assert sorted(name.rsplit("-", 1)[0] for name in checkpoints) == sorted(expected)


def test_features_trains_then_reuses(tmp_path: Path, capsys) -> None:
    workdir = tmp_path / "runs"
    arguments = [*FEATURES, "--models", "baseline", *TINY, "--workdir", str(workdir)]
    assert main(arguments) == 0
    check_features_run(workdir, ["baseline"], capsys.readouterr().out)

    assert main([*arguments, "--no-train"]) == 0
    assert capsys.readouterr().out.count(" reused: accuracy ") == 2


@pytest.mark.slow
def test_features_decoupled_models(tmp_path: Path, capsys) -> None:
    workdir = tmp_path / "runs"
    models = ["baseline", "sphereconv", "ballconv", "tanhconv"]
    arguments = [*FEATURES, "--models", ",".join(models), *TINY, "--workdir", str(workdir)]
    assert main(arguments) == 0
    check_features_run(workdir, models, capsys.readouterr().out)


BAD_FEATURES = [
    (["--models", "tanhconvv"], "unknown model 'tanhconvv'.*did you mean 'tanhconv'"),
    (["--models", "tanhconv,tanhconv"], "names a value twice"),
    (["--training", "adversarial"], "unknown training 'adversarial'"),
    (["--dataset", "cifar10"], "unknown dataset 'cifar10'; expected one of: mnist-sample"),
    (["--out", "/nonexistent-folder/features"], "folder /nonexistent-folder does not exist"),
    (["--no-train"], "no finished checkpoint in .*mnist2d-baseline-natural"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_FEATURES, ids=lambda value: str(value))
def test_features_bad_input(extra: list[str], message: str, tmp_path: Path, capsys) -> None:
    workdir = tmp_path / "runs"
    error = run_error(["features", "--workdir", str(workdir), *TINY, *extra], capsys)
    assert re.search(message, error), error
    assert not (workdir / "models").exists()
