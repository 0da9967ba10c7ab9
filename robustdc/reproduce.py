"""The robustness protocol of Liu et al. (2018), end to end, as one resumable run.

For every operator of a :class:`Preset` (baseline, SphereConv, BallConv and TanhConv with
the cosine angular function), trained naturally and with FGSM adversarial training,
:func:`run_protocol`

1. trains the model, or reuses its checkpoint;
2. attacks it white-box with FGSM and BIM at the paper's budget (its Table 7);
3. attacks it with the FGSM and BIM examples of a separately trained baseline of the
   same training, the black-box transfer of its Table 8;
4. measures DeepFool's L2 and Linf minimum perturbation norms;
5. runs AutoAttack with the reference settings of Croce and Hein (2020), which the
   paper did not run;
6. draws the 2-d features of ``mnist2d`` models, natural and FGSM-trained (the paper's
   appendix D);
7. writes the HTML report.

Every evaluation row goes to the workdir's results store as soon as it is finished,
and every model to its checkpoint, so a rerun skips what an interrupted run finished.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from robustdc.attacks import AttackSpec, load_suite, make_spec
from robustdc.evaluation import EvaluationRequest, Evaluator
from robustdc.train import default_config

logger = logging.getLogger(__name__)

#: The operators and the trainings of the paper's Tables 7 and 8.
OPERATORS = ("baseline", "sphereconv", "ballconv", "tanhconv")
TRAININGS = ("natural", "fgsm")
#: Architecture of the models whose 2-d features are drawn.
FEATURES_ARCH = "mnist2d"


@dataclass(frozen=True)
class Preset:
    """Sizes of one run of the protocol.

    Attributes:
        name: preset name, as given to ``robustdc reproduce --preset``.
        description: one line for the report and the command's output.
        dataset: dataset of the white-box, transfer, DeepFool and AutoAttack results.
        arch: architecture of those models.
        operators: models to compare; ``baseline`` is the plain convolution.
        angular: angular function of the decoupled operators.
        trainings: ``natural`` and or ``fgsm``.
        train_overrides: TrainConfig fields that replace the dataset's defaults.
        suite: attack suite that gives the FGSM and BIM settings of ``dataset``.
        epsilon: Linf budget of AutoAttack in [0, 1] pixel units.
        n_examples: test images for FGSM and BIM (None: the whole test set).
        deepfool_examples: test images for DeepFool.
        autoattack_examples: test images for AutoAttack.
        transfer_seed: seed of the baseline that crafts the transfer examples. It differs
            from every target's seed, so no target attacks itself.
        features_dataset: dataset of the ``mnist2d`` models whose features are drawn.
        features_overrides: TrainConfig fields of those models.
        features_examples: test images drawn per feature picture.
        seed: seed of the target models and of the attacks.
    """

    name: str
    description: str
    dataset: str = "cifar10"
    arch: str = "cnn9"
    operators: tuple[str, ...] = OPERATORS
    angular: str = "cosine"
    trainings: tuple[str, ...] = TRAININGS
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    suite: str = "paper"
    epsilon: float = 8 / 255
    n_examples: int | None = None
    deepfool_examples: int | None = None
    autoattack_examples: int | None = None
    transfer_seed: int = 1
    features_dataset: str = "mnist"
    features_overrides: Mapping[str, Any] = field(default_factory=dict)
    features_examples: int = 10_000
    seed: int = 0

    def replace(self, **changes: Any) -> Preset:
        """Return a copy with ``changes`` applied, e.g. smaller sizes for a quick run."""
        return dataclasses.replace(self, **changes)

    def reductions(self) -> list[str]:
        """Describe, one line each, where this preset is smaller than ``paper``."""
        paper = PRESETS["paper"]
        lines = []
        if self.dataset != paper.dataset:
            lines.append(f"dataset {self.dataset} instead of {paper.dataset}")
        ours_config = _config(self.dataset, self.arch, self.train_overrides)
        theirs_config = _config(paper.dataset, paper.arch, paper.train_overrides)
        for key in sorted(set(self.train_overrides) | set(paper.train_overrides)):
            ours, theirs = getattr(ours_config, key), getattr(theirs_config, key)
            if ours != theirs:
                lines.append(f"training {key}: {_text(ours)} instead of {_text(theirs)}")
        for key, subject in (
            ("n_examples", "FGSM and BIM test images"),
            ("deepfool_examples", "DeepFool test images"),
            ("autoattack_examples", "AutoAttack test images"),
        ):
            ours, theirs = getattr(self, key), getattr(paper, key)
            if ours != theirs:
                lines.append(f"{subject}: {_count(ours)} instead of {_count(theirs)}")
        ours_config = _config(self.features_dataset, FEATURES_ARCH, self.features_overrides)
        theirs_config = _config(paper.features_dataset, FEATURES_ARCH, paper.features_overrides)
        for key in sorted(set(self.features_overrides) | set(paper.features_overrides)):
            ours, theirs = getattr(ours_config, key), getattr(theirs_config, key)
            if ours != theirs:
                lines.append(f"mnist2d training {key}: {_text(ours)} instead of {_text(theirs)}")
        return lines


def _config(dataset: str, arch: str, overrides: Mapping[str, Any]) -> Any:
    return default_config(dataset, "baseline", arch=arch, **overrides)


def _text(value: Any) -> str:
    if value is None:
        return "all"
    if isinstance(value, tuple):
        return "(" + ", ".join(str(item) for item in value) + ")"
    return str(value)


def _count(value: int | None) -> str:
    return "the whole test set" if value is None else f"{value:,}"


PRESETS: dict[str, Preset] = {
    # Full CIFAR-10 with the paper's network and optimizer: CNN-9 without BatchNorm, Adam,
    # 50 epochs with the standard augmentation (the cifar10 defaults of robustdc.train).
    "paper": Preset(
        name="paper",
        description="full CIFAR-10, CNN-9 without BatchNorm, the paper's settings (for a GPU)",
        n_examples=None,
        deepfool_examples=None,
        autoattack_examples=None,
    ),
    # The same protocol sized for a 2-core CPU: a fixed CIFAR-10 subset (the first 10,000
    # training images), CNN-9 at half width with BatchNorm, 2 epochs without augmentation,
    # and fewer test images. Without BatchNorm this CNN-9 reached 22% test accuracy after
    # its first epoch, too little to compare robustness, so the preset adds it. AutoAttack
    # and DeepFool cost tens of gradient steps per image, so they get the fewest images.
    "cpu": Preset(
        name="cpu",
        description="the paper's protocol sized for 45 minutes on a 2-core CPU",
        train_overrides={
            "width": 0.5,
            "batch_norm": True,
            "epochs": 2,
            "lr_milestones": (),
            "train_limit": 10_000,
            "augment": False,
        },
        n_examples=500,
        deepfool_examples=100,
        autoattack_examples=100,
        # The settings of `robustdc features --dataset mnist`, so both share checkpoints.
        features_overrides={"epochs": 1, "train_limit": 20_000, "lr": 3e-3},
        features_examples=2_000,
    ),
}


@dataclass
class ProtocolReport:
    """Record of the models :func:`run_protocol` trained, the rows and the files it wrote."""

    preset: Preset
    results_path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    reused: list[dict[str, Any]] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    report_path: Path | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: The whole results table after the run, earlier rows included.
    results: pd.DataFrame | None = None


def attack_specs(preset: Preset) -> tuple[list[AttackSpec], list[AttackSpec], list[AttackSpec]]:
    """Return the (FGSM and BIM, DeepFool, AutoAttack) specs of ``preset``.

    FGSM and BIM come from the preset's suite, the paper's settings on CIFAR-10.
    """
    suite = load_suite(preset.suite, preset.dataset)
    bounded = [spec for spec in suite if spec.name in ("fgsm", "bim")]
    if not {spec.name for spec in bounded} >= {"fgsm", "bim"}:
        raise ValueError(
            f"attack suite {preset.suite!r} needs fgsm and bim entries for {preset.dataset}"
        )
    deepfool = [make_spec("deepfool", norm="l2"), make_spec("deepfool", norm="linf")]
    autoattack = [make_spec("autoattack", norm="linf", epsilon=preset.epsilon)]
    return bounded, deepfool, autoattack


def run_protocol(
    preset: Preset,
    workdir: Path,
    *,
    device: torch.device | str = "cpu",
    data_dir: Path | None = None,
    features_data_dir: Path | None = None,
    progress: bool = True,
    draw_features: Callable[..., list[Path]] | None = None,
    write_report: Callable[..., Path] | None = None,
) -> ProtocolReport:
    """Run the protocol of ``preset`` in ``workdir``; rows and models finished earlier are reused.

    Args:
        preset: sizes of the run, e.g. ``PRESETS["cpu"]``.
        workdir: folder of the checkpoints, the results store and the figures.
        device: device of training and attacks.
        data_dir: data folder of ``preset.dataset``.
        features_data_dir: data folder of ``preset.features_dataset``; default ``data_dir``.
        progress: show tqdm progress bars.
        draw_features: callable that trains or reuses the ``mnist2d`` models and draws
            their features; ``None`` skips that stage.
        write_report: callable that writes the HTML report; ``None`` skips that stage.
    """
    workdir = Path(workdir)
    evaluator = Evaluator(workdir, device=device, data_dir=data_dir, progress=progress)
    report = ProtocolReport(preset=preset, results_path=evaluator.store.path)
    bounded, deepfool, autoattack = attack_specs(preset)
    for line in preset.reductions():
        logger.info("preset %s: %s", preset.name, line)

    def request(operator: str, training: str, specs: list[AttackSpec], **kwargs: Any):
        return EvaluationRequest(
            operator,
            specs,
            dataset=preset.dataset,
            arch=preset.arch,
            angular=preset.angular,
            training=training,
            seed=preset.seed,
            train_overrides=dict(preset.train_overrides),
            **kwargs,
        )

    # One training at a time, so that an interrupted run has finished whole tables.
    stages: list[tuple[str, list[EvaluationRequest]]] = []
    for training in preset.trainings:
        bounded_requests = [
            request(
                operator,
                training,
                bounded,
                n_examples=preset.n_examples,
                transfer_from="baseline",
                transfer_seed=preset.transfer_seed,
            )
            for operator in preset.operators
        ]
        deepfool_requests = [
            request(operator, training, deepfool, n_examples=preset.deepfool_examples)
            for operator in preset.operators
        ]
        autoattack_requests = [
            request(operator, training, autoattack, n_examples=preset.autoattack_examples)
            for operator in preset.operators
        ]
        stages += [
            (f"{training}: FGSM and BIM, white-box and transfer", bounded_requests),
            (f"{training}: DeepFool minimum norms", deepfool_requests),
            (f"{training}: AutoAttack", autoattack_requests),
        ]

    for title, requests in stages:
        started = time.perf_counter()
        logger.info("stage: %s", title)
        for item in requests:
            result = evaluator.evaluate(item)
            report.rows.extend(result.rows)
            report.reused.extend(result.reused)
            report.trained.extend(result.trained)
        report.stage_seconds[title] = time.perf_counter() - started

    if draw_features is not None:
        started = time.perf_counter()
        logger.info("stage: mnist2d features")
        report.figures.extend(
            draw_features(
                preset=preset,
                workdir=workdir,
                device=device,
                data_dir=features_data_dir or data_dir,
                progress=progress,
            )
        )
        report.stage_seconds["mnist2d features"] = time.perf_counter() - started

    if write_report is not None:
        started = time.perf_counter()
        report.report_path = write_report(preset=preset, workdir=workdir)
        report.stage_seconds["report"] = time.perf_counter() - started
    report.results = evaluator.store.read()
    return report


def checkpoint_names(preset: Preset) -> dict[tuple[str, str], str]:
    """Map (operator, training) to the checkpoint name of that target model of ``preset``."""
    names = {}
    for training in preset.trainings:
        for operator in preset.operators:
            config = default_config(
                preset.dataset,
                operator,
                angular=preset.angular,
                arch=preset.arch,
                training=training,
                **{**preset.train_overrides, "seed": preset.seed},
            )
            names[(operator, training)] = config.name
    return names


# (label, attack, kind, column) of each line of protocol_table, per training.
_TABLE_LINES = (
    ("clean accuracy %", "fgsm", "white-box", "clean_accuracy"),
    ("FGSM white-box %", "fgsm", "white-box", "robust_accuracy"),
    ("BIM white-box %", "bim", "white-box", "robust_accuracy"),
    ("AutoAttack white-box %", "autoattack", "white-box", "robust_accuracy"),
    ("BIM on the AutoAttack images %", "autoattack", "white-box", "bim_robust_accuracy"),
    ("FGSM transfer %", "fgsm", "transfer", "robust_accuracy"),
    ("BIM transfer %", "bim", "transfer", "robust_accuracy"),
    ("DeepFool L2 median", "deepfool/l2", "minimum-norm", "l2_median"),
    ("DeepFool Linf median", "deepfool/linf", "minimum-norm", "linf_median"),
)


def protocol_table(results: pd.DataFrame, preset: Preset) -> pd.DataFrame:
    """Arrange the preset's rows of ``results`` like the paper's Tables 7 and 8.

    One line per (training, measure) and one column per operator. Accuracies are in
    percent; DeepFool norms are medians over the fooled examples in pixel units. A
    missing row gives NaN.
    """
    names = checkpoint_names(preset)
    lines = []
    for training in preset.trainings:
        for label, attack, kind, column in _TABLE_LINES:
            line: dict[str, Any] = {"training": training, "measure": label}
            attack_name, _, norm = attack.partition("/")
            for operator in preset.operators:
                match = results[
                    (results["checkpoint"] == names[(operator, training)])
                    & (results["dataset"] == preset.dataset)
                    & (results["attack"] == attack_name)
                    & (results["kind"] == kind)
                    & (results["seed"] == preset.seed)
                ]
                if norm:
                    match = match[match["norm"] == norm]
                if attack_name in ("fgsm", "bim", "autoattack"):
                    match = match[(match["epsilon"] - preset.epsilon).abs() < 1e-9]
                value = float(match[column].iloc[-1]) if len(match) else float("nan")
                if column.endswith("accuracy"):
                    value *= 100
                line[operator] = value
            lines.append(line)
    return pd.DataFrame(lines, columns=["training", "measure", *preset.operators])


#: Published CIFAR-10 test accuracies (%) of CNN-9 at epsilon 8/255, Liu et al. (2018),
#: Table 7 (white-box) and Table 8 (transfer from a baseline), keyed by training and
#: protocol_table measure. Reference values for comparison, not results of this library.
PAPER_ACCURACY: dict[tuple[str, str], dict[str, float]] = {
    ("natural", "clean accuracy %"): {
        "baseline": 85.35,
        "sphereconv": 88.58,
        "ballconv": 91.13,
        "tanhconv": 91.45,
    },
    ("natural", "FGSM white-box %"): {
        "baseline": 18.82,
        "sphereconv": 43.64,
        "ballconv": 50.47,
        "tanhconv": 52.60,
    },
    ("natural", "BIM white-box %"): {
        "baseline": 8.67,
        "sphereconv": 8.89,
        "ballconv": 7.74,
        "tanhconv": 10.18,
    },
    ("fgsm", "clean accuracy %"): {
        "baseline": 83.70,
        "sphereconv": 87.41,
        "ballconv": 87.47,
        "tanhconv": 87.54,
    },
    ("fgsm", "FGSM white-box %"): {
        "baseline": 78.96,
        "sphereconv": 85.98,
        "ballconv": 82.20,
        "tanhconv": 81.46,
    },
    ("fgsm", "BIM white-box %"): {
        "baseline": 7.96,
        "sphereconv": 35.07,
        "ballconv": 17.38,
        "tanhconv": 19.86,
    },
    ("natural", "FGSM transfer %"): {
        "baseline": 50.90,
        "sphereconv": 56.71,
        "ballconv": 49.50,
        "tanhconv": 50.61,
    },
    ("natural", "BIM transfer %"): {
        "baseline": 36.22,
        "sphereconv": 43.10,
        "ballconv": 27.48,
        "tanhconv": 29.06,
    },
    ("fgsm", "FGSM transfer %"): {
        "baseline": 77.57,
        "sphereconv": 76.29,
        "ballconv": 78.67,
        "tanhconv": 80.38,
    },
    ("fgsm", "BIM transfer %"): {
        "baseline": 78.55,
        "sphereconv": 77.79,
        "ballconv": 80.59,
        "tanhconv": 82.47,
    },
}


def comparison_markdown(table: pd.DataFrame) -> str:
    """Format a :func:`protocol_table` as Markdown, each cell "measured (paper)".

    The paper's value appears only where Liu et al. (2018) published one.
    """
    operators = [name for name in table.columns if name not in ("training", "measure")]
    lines = [
        "| training | measure | " + " | ".join(operators) + " |",
        "| --- | --- | " + " | ".join("---" for _ in operators) + " |",
    ]
    for line in table.to_dict("records"):
        paper = PAPER_ACCURACY.get((line["training"], line["measure"]), {})
        cells = []
        for operator in operators:
            value = line[operator]
            digits = ".1f" if line["measure"].endswith("%") else ".3f"
            text = "-" if pd.isna(value) else format(value, digits)
            if operator in paper:
                text += f" ({paper[operator]:.2f})"
            cells.append(text)
        lines.append(f"| {line['training']} | {line['measure']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
