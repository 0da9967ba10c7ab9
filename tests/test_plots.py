"""Tests of robustdc.plots: files, pixel sizes, content and bad input."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from synthetic_results import FGSM_EPSILONS, MODELS, metrics_frame, synthetic_rows, write_workdir

from robustdc.plots import (
    DPI,
    FEATURE_PANEL_SIZE,
    LEGEND_WIDTH,
    OKABE_ITO,
    PANEL_SIZE,
    FeaturePanel,
    OutputPathError,
    PlotError,
    load_norm_curves,
    plot_features,
    plot_perturbation_norms,
    plot_robust_accuracy,
    plot_training_curves,
    save_figure,
)
from robustdc.results import ResultsStore, empty_frame


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ResultsStore:
    return write_workdir(tmp_path_factory.mktemp("plots") / "runs")


def assert_png(path: Path, size: tuple[float, float]) -> None:
    """Check that ``path`` is a PNG of ``size`` inches at DPI and shows more than a blank."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (round(size[0] * DPI), round(size[1] * DPI))
        pixels = np.asarray(image.convert("RGB"))
    non_white = (pixels < 250).any(axis=2).mean()
    assert non_white > 0.02, f"{path} is almost blank ({non_white:.1%} non-white pixels)"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 20, f"{path} has only {colours} colours"


def assert_svg(path: Path) -> None:
    root = ElementTree.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_robust_accuracy_files_and_size(store: ResultsStore, tmp_path: Path) -> None:
    figure = plot_robust_accuracy(store.read(), kind="white-box")
    paths = save_figure(figure, tmp_path / "accuracy")
    assert paths == [tmp_path / "accuracy.png", tmp_path / "accuracy.svg"]
    # Two panels (FGSM and BIM) plus the legend column.
    assert_png(paths[0], (2 * PANEL_SIZE[0] + LEGEND_WIDTH, PANEL_SIZE[1]))
    assert_svg(paths[1])


def test_robust_accuracy_one_line_per_model(store: ResultsStore) -> None:
    figure = plot_robust_accuracy(store.read(), kind="white-box")
    fgsm_axis, bim_axis = figure.axes
    assert fgsm_axis.get_title() == "FGSM (Linf)"
    assert bim_axis.get_title() == "BIM (Linf)"
    lines = fgsm_axis.get_lines()
    assert [line.get_label() for line in lines] == list(MODELS)
    for line in lines:
        assert list(line.get_xdata()) == list(FGSM_EPSILONS)
    baseline = store.read().query("model == 'baseline' and attack == 'fgsm'")
    expected = 100 * baseline.sort_values("epsilon")["robust_accuracy"].to_numpy()
    np.testing.assert_allclose(lines[0].get_ydata(), expected)
    assert "epsilon" in fgsm_axis.get_xlabel()
    assert "%" in fgsm_axis.get_ylabel()


def test_transfer_plot_names_source(store: ResultsStore) -> None:
    figure = plot_robust_accuracy(store.read(), kind="transfer")
    assert "transfer from baseline" in figure.get_suptitle()
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["sphereconv", "tanhconv"]


def test_label_order_keeps_model_colours(store: ResultsStore) -> None:
    transfer = plot_robust_accuracy(store.read(), kind="transfer", label_order=MODELS)
    colours = [line.get_color() for line in transfer.axes[0].get_lines()]
    assert colours == [OKABE_ITO[1], OKABE_ITO[2]]  # baseline has no transfer row
    white_box = plot_robust_accuracy(store.read(), kind="white-box", label_order=MODELS)
    colours = [line.get_color() for line in white_box.axes[0].get_lines()]
    assert colours == list(OKABE_ITO[:3])


def test_norm_curves_keep_flipped_samples(store: ResultsStore) -> None:
    frame = store.read()
    curves, problems = load_norm_curves(store, frame)
    assert problems == []
    assert [(curve.label, curve.norm) for curve in curves] == [
        (model, norm) for model in MODELS for norm in ("l2", "linf")
    ]
    row = frame.query("model == 'tanhconv' and norm == 'l2' and kind == 'minimum-norm'")
    stored = store.load_sample_norms(row.iloc[0].to_dict())
    tanh_l2 = curves[4]
    np.testing.assert_array_equal(tanh_l2.values, stored.l2[stored.fooled])
    assert tanh_l2.n_examples == len(stored.l2)


def test_norm_plot_sorted_shared_axes(store: ResultsStore, tmp_path: Path) -> None:
    curves, _ = load_norm_curves(store, store.read())
    figure = plot_perturbation_norms(curves)
    l2_axis, linf_axis = figure.axes
    assert l2_axis.get_title() == "DeepFool (L2)"
    assert linf_axis.get_title() == "DeepFool (Linf)"
    assert [line.get_label() for line in l2_axis.get_lines()] == list(MODELS)
    for line in l2_axis.get_lines():
        values = np.asarray(line.get_ydata())
        assert np.all(np.diff(values) >= 0)
        assert line.get_xdata()[0] == 1
    paths = save_figure(figure, tmp_path / "norms.png")
    assert_png(paths[0], (2 * PANEL_SIZE[0] + LEGEND_WIDTH, PANEL_SIZE[1]))
    assert_svg(paths[1])


def feature_panels(models: list[str], trainings: list[str]) -> list[FeaturePanel]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    angles = labels * (2 * np.pi / 10)
    panels = []
    for model in models:
        for training in trainings:
            radius = rng.gamma(3.0, 2.0, size=len(labels))
            features = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
            features += rng.normal(scale=0.3, size=features.shape)
            panels.append(FeaturePanel(model, training, features, labels, accuracy=0.9))
    return panels


def test_features_grid_size_and_titles(tmp_path: Path) -> None:
    panels = feature_panels(["baseline", "tanhconv"], ["natural", "fgsm"])
    figure = plot_features(panels[:3])  # tanhconv has no fgsm panel
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[:3] == [
        "baseline, natural (accuracy 90.0%)",
        "baseline, fgsm (accuracy 90.0%)",
        "tanhconv, natural (accuracy 90.0%)",
    ]
    assert "not drawn" in figure.axes[3].texts[0].get_text()
    class_names = {text.get_text() for text in figure.axes[0].texts}
    assert class_names == {str(digit) for digit in range(10)}
    paths = save_figure(figure, tmp_path / "features")
    width = 2 * FEATURE_PANEL_SIZE + LEGEND_WIDTH / 2
    assert_png(paths[0], (width, 2 * FEATURE_PANEL_SIZE))
    assert_svg(paths[1])


def test_training_curves(tmp_path: Path) -> None:
    figure = plot_training_curves({"baseline": metrics_frame(3), "tanhconv": metrics_frame(2)})
    loss_axis, accuracy_axis = figure.axes
    assert [line.get_label() for line in loss_axis.get_lines()] == ["baseline", "tanhconv"]
    assert len(accuracy_axis.get_lines()) == 4  # test and training accuracy per model
    assert loss_axis.get_xlabel() == "epoch"
    assert list(loss_axis.get_xticks()) == [1, 2, 3]
    paths = save_figure(figure, tmp_path / "training", formats=("png",))
    assert paths == [tmp_path / "training.png"]
    assert_png(paths[0], (2 * PANEL_SIZE[0] + LEGEND_WIDTH, PANEL_SIZE[1]))


def test_dollar_signs_drawn_literally() -> None:
    rows = [row for row in synthetic_rows(("baseline",)) if row["kind"] == "white-box"]
    for row in rows:
        row["model"] = "cost $5 and $6"
    figure = plot_robust_accuracy(pd.DataFrame(rows))
    figure.canvas.draw()
    legend_texts = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend_texts == ["cost $5 and $6"]


EMPTY_INPUTS = [
    ("accuracy-empty", lambda: plot_robust_accuracy(empty_frame()), "no white-box results"),
    (
        "accuracy-no-transfer",
        lambda: plot_robust_accuracy(pd.DataFrame(synthetic_rows(("baseline",))), "transfer"),
        "no transfer results",
    ),
    ("norms-empty", lambda: plot_perturbation_norms([]), "no per-sample deepfool norms"),
    ("features-empty", lambda: plot_features([]), "no 2-d features"),
    (
        "features-3d",
        lambda: plot_features([FeaturePanel("m", "natural", np.zeros((4, 3)), np.zeros(4, int))]),
        r"must have shape \(N, 2\)",
    ),
    (
        "features-bad-label",
        lambda: plot_features([FeaturePanel("m", "natural", np.zeros((2, 2)), np.array([0, 10]))]),
        r"labels must be in \[0, 10\)",
    ),
    ("training-empty", lambda: plot_training_curves({}), "no training metrics"),
    (
        "training-missing-column",
        lambda: plot_training_curves({"m": pd.DataFrame({"epoch": [1]})}),
        "lack column",
    ),
]


@pytest.mark.parametrize(
    ("make", "message"), [case[1:] for case in EMPTY_INPUTS], ids=[case[0] for case in EMPTY_INPUTS]
)
def test_bad_data_raises_plot_error(make, message) -> None:
    with pytest.raises(PlotError, match=message):
        make()


def test_unknown_kind_rejected(store: ResultsStore) -> None:
    with pytest.raises(ValueError, match="kind must be one of: white-box, transfer"):
        plot_robust_accuracy(store.read(), kind="minimum-norm")


def test_save_into_missing_folder_leaves_nothing(store: ResultsStore, tmp_path: Path) -> None:
    figure = plot_robust_accuracy(store.read())
    with pytest.raises(OutputPathError, match="does not exist"):
        save_figure(figure, tmp_path / "missing" / "accuracy")
    assert not (tmp_path / "missing").exists()


def test_failed_write_leaves_no_temporary(
    store: ResultsStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figure = plot_robust_accuracy(store.read())

    def fail_replace(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OutputPathError, match="no space left on device"):
        save_figure(figure, tmp_path / "accuracy", formats=("png",))
    assert os.listdir(tmp_path) == []
