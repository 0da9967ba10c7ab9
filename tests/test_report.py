"""Tests of robustdc.report: content, embedding, escaping, bad input and a browser render."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from synthetic_results import MODELS, synthetic_rows, write_workdir
from test_plots import feature_panels

from robustdc.plots import OKABE_ITO, OutputPathError, plot_features, save_figure
from robustdc.report import (
    Report,
    ReportError,
    build_report,
    complete_columns,
    features_image_stem,
    select_rows,
)
from robustdc.results import COLUMN_NAMES, KEY_COLUMNS

XSS_MODEL = "<script>alert(1)</script>"


class _Elements(HTMLParser):
    """Collects every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Elements()
    parser.feed(html)
    return parser.tags


WARNING = "BIM is weaker than FGSM at the same epsilon: <b>gradient masking</b>?"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Three models, plus one whose name is markup and whose BIM row has a warning."""
    path = tmp_path_factory.mktemp("report") / "runs"
    rows = synthetic_rows((*MODELS, "ballconv"))
    for row in rows:
        if row["model"] == "ballconv":
            row["model"] = XSS_MODEL
            if row["attack"] == "bim":
                row["warnings"] = json.dumps([WARNING])
    write_workdir(path, rows=rows)
    stem = features_image_stem(path, "mnist-sample")
    stem.parent.mkdir(parents=True)
    panels = feature_panels(["baseline", "tanhconv"], ["natural", "fgsm"])
    save_figure(plot_features(panels), stem, formats=("png",))
    return path


@pytest.fixture(scope="module")
def report(workdir: Path) -> Report:
    return build_report(workdir, command_line="robustdc report --workdir runs")


def test_report_embeds_every_image(report: Report) -> None:
    images = [attrs for tag, attrs in elements(report.html) if tag == "img"]
    titles = [figure.title for figure in report.figures]
    assert titles == [
        "Robust accuracy vs epsilon (white-box)",
        "Robust accuracy vs epsilon (transfer)",
        "DeepFool perturbation norms per test sample",
        "Training curves",
        "2-d features (mnist2d)",
    ]
    assert len(images) == len(report.figures)
    for attrs in images:
        source = attrs["src"] or ""
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG"
            assert image.size[0] > 300


def test_report_has_no_external_reference(report: Report) -> None:
    html = report.html
    # Base64 contains "/" but no ":", so only the text outside the images is searched
    # for protocol-relative "//host" references.
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert not re.search(r"[a-z]+://|https?:|//[a-z0-9]", text, re.IGNORECASE)
    assert "url(" not in html
    assert "@import" not in html
    for tag, attrs in elements(html):
        assert tag not in ("script", "link", "iframe", "object", "embed")
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:image/png;base64,", "#")), (tag, name, value)
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert f'content="{policy}"' in html


def test_report_compares_models(report: Report) -> None:
    html = report.html
    section = report.sections[0]
    assert section.dataset == "mnist-sample"
    models = ["baseline", XSS_MODEL, "sphereconv", "tanhconv"]
    assert [row[0].text for row in section.overview.rows] == models
    assert [row[0].text for row in section.white_box.rows] == models
    assert [row[0].text for row in section.transfer.rows] == models[1:]
    # FGSM at four epsilons and BIM at one, after the model column.
    assert section.white_box.groups == [("", 1), ("FGSM (Linf)", 4), ("BIM (Linf)", 1)]
    rows = pd.DataFrame(synthetic_rows())
    expected = rows.query("model == 'tanhconv' and attack == 'fgsm' and kind == 'white-box'")
    expected = expected.sort_values("epsilon")["robust_accuracy"]
    texts = [cell.text for cell in section.white_box.rows[3][1:5]]
    assert texts == [f"{100 * value:.1f}%" for value in expected]
    assert section.minimum_norm.columns == [
        "model",
        "median L2",
        "flipped",
        "median Linf",
        "flipped",
    ]
    assert section.minimum_norm.rows[2][1].text == "2"  # sphereconv, median L2
    assert "robustdc train --model tanhconv --dataset mnist-sample --epochs 3" in html


def test_report_metadata(report: Report) -> None:
    html = report.html
    assert "robustdc report --workdir runs" in html
    assert "torchattacks 3.5.1" in html
    assert "evaluation seeds" in html
    assert "2.14.1" in html
    assert "2026-01-01T00:00:00+00:00" in html  # training start from config.json
    # The recorded attack settings, per attack, in the threat-model table.
    assert "<code>steps: 1</code>" in html
    assert "<code>steps: 10</code>" in html
    assert "<code>step_size: 0.0375</code>" in html


def test_model_name_is_escaped(report: Report) -> None:
    html = report.html
    assert XSS_MODEL not in html
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>" not in html
    assert "&lt;b&gt;gradient masking&lt;/b&gt;" in html


def test_warnings_are_highlighted(report: Report) -> None:
    html = report.html
    assert "1 sanity-check warning." in html
    assert 'class="warnings" role="alert"' in html
    item = report.sections[0].warnings
    assert [(entry.model, entry.evaluation, entry.message) for entry in item] == [
        (XSS_MODEL, "BIM (Linf) epsilon=0.3, white-box", WARNING)
    ]
    bim_cell = report.sections[0].white_box.rows[1][-1]
    assert bim_cell.classes == "num warn"
    assert bim_cell.text.endswith("!")
    assert WARNING in bim_cell.title
    assert html.count('class="num warn"') == 2  # the BIM cell and the warning count


def test_missing_optional_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame(synthetic_rows())
    frame = frame[frame["kind"] != "minimum-norm"][[*KEY_COLUMNS, "robust_accuracy"]]
    frame.to_csv(tmp_path / "results.csv", index=False)
    report = build_report(tmp_path)
    assert [figure.title for figure in report.figures] == [
        "Robust accuracy vs epsilon (white-box)",
        "Robust accuracy vs epsilon (transfer)",
    ]
    overview = report.sections[0].overview
    assert {row[6].text for row in overview.rows} == {"-"}  # no clean accuracy
    assert "have no sanity-check measurements" in report.html

    completed = complete_columns(frame.drop(columns=["arch", "seed", "epsilon"]))
    assert set(COLUMN_NAMES) <= set(completed.columns)
    assert completed["epsilon"].isna().all()


def test_select_rows_by_dataset_and_model() -> None:
    frame = pd.DataFrame(synthetic_rows())
    selected = select_rows(frame, datasets=["mnist-sample"], models=["tanhconv"])
    assert set(selected["model"]) == {"tanhconv"}
    assert len(selected) == (frame["model"] == "tanhconv").sum()


BAD_REQUESTS = [
    ("empty", {}, "is empty; run robustdc evaluate first"),
    ("dataset", {"datasets": ["cifar10"]}, "no results for dataset.*cifar10.*mnist-sample"),
    ("model", {"models": ["ballconv"]}, "no results for model.*ballconv.*baseline"),
]


@pytest.mark.parametrize(
    ("case", "options", "message"), BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS]
)
def test_bad_requests_raise(
    case: str, options: dict, message: str, workdir: Path, tmp_path: Path
) -> None:
    source = tmp_path if case == "empty" else workdir
    with pytest.raises(ReportError, match=message):
        build_report(source, **options)


def test_write_into_missing_folder(report: Report, tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="folder .*missing does not exist"):
        report.write(tmp_path / "missing" / "report.html")
    assert not (tmp_path / "missing").exists()


def test_write_into_read_only_folder(
    report: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
        with pytest.raises(OutputPathError, match="cannot write .*: permission denied"):
            report.write(folder / "report.html")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


def test_write_replaces_atomically(report: Report, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    report.write(target)
    assert target.read_text(encoding="utf-8") == report.html
    assert sorted(os.listdir(tmp_path)) == ["report.html"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def count_colour(pixels: np.ndarray, colour: str, tolerance: int = 12) -> int:
    """Count the pixels within ``tolerance`` of the hex ``colour`` in every channel."""
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels.astype(int) - target) <= tolerance).all(axis=2).sum())


def test_report_renders_in_chromium(report: Report, tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")

    page = report.write(tmp_path / "report.html")
    screenshot = tmp_path / "screenshot.png"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}",
        "--window-size=1280,4000",
        page.resolve().as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]

    with Image.open(screenshot) as image:
        assert image.size == (1280, 4000)
        pixels = np.asarray(image.convert("RGB"))
    non_white = (pixels < 245).any(axis=2).mean()
    assert non_white > 0.05, f"screenshot is almost blank ({non_white:.1%} non-white)"
    # The pink background of the warning banner and box (--bad-bg in report.css).
    assert count_colour(pixels, "#fdecea", tolerance=3) > 20_000
    # The first model's line colour: the embedded plots were loaded and drawn.
    assert count_colour(pixels, OKABE_ITO[0]) > 200
