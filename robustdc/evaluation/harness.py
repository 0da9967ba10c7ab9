"""The evaluation harness: white-box, transfer and minimum-norm evaluations.

For one target model and a list of attack specs, the harness

1. finds the model's checkpoint, or trains it with the dataset's defaults;
2. classifies the first ``n_examples`` test images;
3. runs each attack through the adapters of :mod:`robustdc.attacks` (for transfer, on the
   source model), then checks the invariants of :mod:`robustdc.evaluation.checks`;
4. counts a sample as robust only if it is classified correctly clean and no attack or
   restart fooled it;
5. runs the sanity checks of :mod:`robustdc.evaluation.sanity`;
6. appends one row per evaluation to the results store as soon as it is finished.

When torch's default process group has more than one rank (``torchrun``), every rank
runs the same request. The ranks share out the clean predictions, the attacks and the
sanity checks batch by batch, gather the per-sample results (see
:mod:`robustdc.evaluation.sharding`) and compute the same rows, and rank 0 alone reads
the stored rows to skip and writes the new ones. A rank that fails makes every rank
raise :class:`~robustdc.distributed.RankFailedError` before the row is written.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import robustdc
from robustdc import attacks as attack_lib
from robustdc import distributed
from robustdc.attacks import AttackSpec
from robustdc.data import load_dataset
from robustdc.evaluation import sanity
from robustdc.evaluation.checks import ModelSnapshot, check_adversarial, perturbation_norms
from robustdc.evaluation.sharding import AttackedExamples, merge_shards
from robustdc.results import ResultsStore
from robustdc.train import TrainConfig, default_config, find_or_train

logger = logging.getLogger(__name__)

BOUNDS = (0.0, 1.0)
KINDS = ("white-box", "transfer", "minimum-norm")
#: Attacks whose output is their last iterate, so they perturb every input they attack.
ITERATE_ATTACKS = ("fgsm", "bim", "pgd")


@dataclass
class EvaluationRequest:
    """An evaluation to run: one target model against a list of attacks."""

    model: str
    attacks: Sequence[AttackSpec]
    dataset: str = "mnist-sample"
    arch: str | None = None
    angular: str = "cosine"
    training: str = "natural"
    n_examples: int | None = 1000
    transfer_from: str | None = None
    seed: int = 0
    #: Training seed of the transfer source; ``None``: ``seed``. A different seed gives a
    #: separately trained source, so a target can be attacked by its own architecture.
    transfer_seed: int | None = None
    force: bool = False
    allow_train: bool = True
    batch_size: int = 256
    sanity_checks: bool = True
    #: TrainConfig fields that replace the dataset defaults for models trained here.
    train_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """Per-sample result of one attack on the evaluated examples."""

    robust: Tensor  # bool (N,): correct clean and not fooled
    fooled: Tensor  # bool (N,): correct clean and fooled
    l2: Tensor
    linf: Tensor
    info: dict[str, Any]
    seconds: float


@dataclass
class _Models:
    target: nn.Module
    target_config: TrainConfig
    source: nn.Module | None = None
    source_config: TrainConfig | None = None


@dataclass
class EvaluationReport:
    """Rows of one request: those computed now and those reused from the store."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    reused: list[dict[str, Any]] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    results_path: Path | None = None


def _predict(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    device = next(model.parameters()).device
    predictions = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size].to(device))
            predictions.append(logits.argmax(dim=1).cpu())
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


class Evaluator:
    """Runs evaluation requests against one workdir and device."""

    def __init__(
        self,
        workdir: Path,
        *,
        device: torch.device | str = "cpu",
        data_dir: Path | None = None,
        progress: bool = True,
        run_attack: Callable[..., Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.device = torch.device(device)
        self.data_dir = data_dir
        self.progress = progress
        self.store = ResultsStore(self.workdir)
        # The attack runner is injectable so that tests can prove the checks catch a
        # broken attack.
        self._run_attack = run_attack or attack_lib.run_attack
        self._cache: dict[tuple, Any] = {}
        self.batch_size = 256

    # -- models and data ---------------------------------------------------------------

    def _model(
        self,
        request: EvaluationRequest,
        operator: str,
        report: EvaluationReport,
        seed: int | None = None,
    ):
        config = default_config(
            request.dataset,
            operator,
            angular=request.angular if operator != "baseline" else "cosine",
            arch=request.arch,
            training=request.training,
            **{**request.train_overrides, "seed": request.seed if seed is None else seed},
        )
        model, config, trained = find_or_train(
            config,
            self.workdir,
            device=self.device,
            data_dir=self.data_dir,
            allow_train=request.allow_train,
            progress=self.progress,
        )
        if trained:
            report.trained.append(config.name)
        model.eval()
        return model, config

    def _examples(self, request: EvaluationRequest) -> tuple[Tensor, Tensor]:
        dataset = load_dataset(
            request.dataset, "test", data_dir=self.data_dir, limit=request.n_examples
        )
        images = dataset.images.float().div_(255)
        labels = torch.as_tensor(dataset.labels, dtype=torch.long)
        return images, labels

    # -- attacks -----------------------------------------------------------------------

    def _attack(
        self, model: nn.Module, images: Tensor, labels: Tensor, spec: AttackSpec, seed: int
    ) -> tuple[Tensor, dict[str, Any], float, Tensor | None]:
        """Run one attack (the adapter handles restarts) and check its invariants."""
        snapshot = ModelSnapshot.take(model)
        output = self._run_attack(
            model, images, labels, spec, batch_size=self.batch_size, seed=seed, device=self.device
        )
        snapshot.verify(model, spec.label)
        x_adv = output.x_adv.detach().cpu()
        check_adversarial(
            images,
            x_adv,
            norm=spec.norm,
            epsilon=spec.epsilon,
            bounds=BOUNDS,
            attack_label=spec.label,
        )
        success = None if output.success is None else output.success.detach().cpu().bool()
        return x_adv, dict(output.info), float(output.seconds), success

    def _attack_examples(
        self,
        attacked: nn.Module,
        target: nn.Module,
        images: Tensor,
        labels: Tensor,
        spec: AttackSpec,
        seed: int,
    ) -> AttackedExamples:
        """Attack ``attacked`` and classify the results with ``target``, per sample.

        Each rank takes its share of whole batches; the results of all ranks are
        gathered, in example order, on every rank.
        """
        start, stop = distributed.shard_range(len(labels), self.batch_size)

        def attack_shard() -> AttackedExamples | None:
            if start == stop:
                return None
            x, y = images[start:stop], labels[start:stop]
            x_adv, info, seconds, success = self._attack(attacked, x, y, spec, seed)
            adversarial_correct = _predict(target, x_adv, self.batch_size) == y
            l2, linf = perturbation_norms(x, x_adv)
            return AttackedExamples(adversarial_correct, l2, linf, success, info, seconds)

        return merge_shards(distributed.run_and_gather(f"attack {spec.label}", attack_shard))

    def _clean_correct(self, target: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        """Return whether ``target`` classifies each clean image correctly."""
        start, stop = distributed.shard_range(len(labels), self.batch_size)
        shards = distributed.run_and_gather(
            "clean predictions",
            lambda: _predict(target, images[start:stop], self.batch_size),
        )
        return torch.cat(shards) == labels

    def _zero_gradient_fraction(self, model: nn.Module, images: Tensor, labels: Tensor) -> float:
        start, stop = distributed.shard_range(len(labels), self.batch_size)
        counts = distributed.run_and_gather(
            "zero-gradient count",
            lambda: sanity.count_zero_gradients(
                model, images[start:stop], labels[start:stop], self.batch_size
            ),
        )
        return sum(counts) / max(1, len(labels))

    # -- the request -------------------------------------------------------------------

    def evaluate(self, request: EvaluationRequest) -> EvaluationReport:
        """Run every (attack, kind) of ``request`` that the store does not hold yet."""
        report = EvaluationReport(results_path=self.store.path)
        # The sanity cache lives for one request: its keys name models by id(), which
        # Python reuses once a model is freed, and rows by attack label alone.
        self._cache = {}
        self.batch_size = request.batch_size
        torch.manual_seed(request.seed)
        target, target_config = self._model(request, request.model, report)
        models = _Models(target, target_config)
        if request.transfer_from is not None:
            models.source, models.source_config = self._model(
                request, request.transfer_from, report, seed=request.transfer_seed
            )

        images, labels = self._examples(request)
        clean_correct = self._clean_correct(target, images, labels)
        clean_accuracy = float(clean_correct.float().mean()) if len(labels) else math.nan
        logger.info(
            "%s: clean accuracy %.2f%% on %d test examples of %s",
            target_config.name,
            100 * clean_accuracy,
            len(labels),
            request.dataset,
        )
        context = _Context(request, models, images, labels, clean_correct, clean_accuracy)

        for spec in request.attacks:
            kinds = ["minimum-norm"] if spec.epsilon is None else ["white-box"]
            if request.transfer_from is not None and spec.epsilon is not None:
                kinds.append("transfer")
            for kind in kinds:
                key = context.key(spec, kind)
                stored = None if request.force else self.store.get(key)
                # Rank 0 decides, so that all ranks skip the same rows.
                stored = distributed.broadcast_object(stored, f"stored row {spec.label} {kind}")
                if stored is not None:
                    report.reused.append(stored)
                    logger.info(
                        "skipping %s (%s): already in %s", spec.label, kind, self.store.path
                    )
                    continue
                row = self._evaluate_one(context, spec, kind)
                if distributed.is_main_process():
                    self.store.append([row], replace=request.force)
                report.rows.append(row)
        return report

    def _evaluate_one(self, context: _Context, spec: AttackSpec, kind: str) -> dict[str, Any]:
        request = context.request
        target = context.models.target
        attacked = context.models.source if kind == "transfer" else target
        logger.info("running %s (%s) on %d examples", spec.label, kind, len(context.labels))
        if kind == "transfer":
            # The target only classifies the transferred examples: no gradient reaches it.
            target_snapshot = ModelSnapshot.take(target)
        attacked_examples = self._attack_examples(
            attacked, target, context.images, context.labels, spec, request.seed
        )
        if kind == "transfer":
            target_snapshot.verify(target, spec.label)
        info = attacked_examples.info
        library_success = attacked_examples.success
        correct = context.clean_correct
        outcome = Outcome(
            robust=correct & attacked_examples.adversarial_correct,
            fooled=correct & ~attacked_examples.adversarial_correct,
            l2=attacked_examples.l2,
            linf=attacked_examples.linf,
            info=info,
            seconds=attacked_examples.seconds,
        )
        if kind == "minimum-norm" and library_success is not None:
            # A minimum-norm attack that reports failure may return any point (foolbox's
            # Carlini-Wagner returns an all-zero image): its norm is no minimal norm.
            outcome.fooled &= library_success

        row = context.base_row(spec, kind)
        n = len(context.labels)
        n_correct = int(context.clean_correct.sum())
        robust_accuracy = float(outcome.robust.float().mean()) if n else math.nan
        row.update(
            robust_accuracy=robust_accuracy,
            attack_success_rate=(int(outcome.fooled.sum()) / n_correct) if n_correct else math.nan,
            seconds=outcome.seconds,
            library=info.get("library", ""),
            library_version=info.get("library_version", ""),
            attack_settings=json.dumps(info, sort_keys=True, default=str),
        )
        warnings: list[str] = []
        # Only attacks that return their last iterate change every input they attack.
        # AutoAttack, Square and CW return a sample unchanged when they fail on it.
        if spec.name in ITERATE_ATTACKS and spec.epsilon is not None and spec.epsilon > 0:
            correct = context.clean_correct
            changed = int((outcome.l2[correct] > 0).sum())
            warning = sanity.check_unchanged(changed, int(correct.sum()), spec.label)
            if warning:
                warnings.append(warning)

        if kind == "minimum-norm":
            self._minimum_norm_stats(context, spec, outcome, row, warnings)
        else:
            fooled_mask = outcome.fooled
            row.update(_norm_stats(outcome.l2[fooled_mask], outcome.linf[fooled_mask]))

        if request.sanity_checks and kind != "minimum-norm":
            self._sanity(context, spec, kind, row, warnings)
        row["warnings"] = json.dumps(warnings)
        for warning in warnings:
            logger.warning("%s (%s): %s", spec.label, kind, warning)
        return row

    def _minimum_norm_stats(
        self,
        context: _Context,
        spec: AttackSpec,
        outcome: Outcome,
        row: dict[str, Any],
        warnings: list[str],
    ) -> None:
        """Norm statistics over fooled samples; unfooled ones are counted and flagged."""
        correct = context.clean_correct
        fooled = outcome.fooled
        not_fooled = correct & ~fooled
        n_correct = int(correct.sum())
        success = int(fooled.sum()) / n_correct if n_correct else math.nan
        row.update(_norm_stats(outcome.l2[fooled], outcome.linf[fooled]))
        row.update(
            n_not_fooled=int(not_fooled.sum()),
            deepfool_success_rate=success if spec.name == "deepfool" else math.nan,
        )
        if spec.name == "deepfool" and n_correct:
            warning = sanity.check_deepfool_success(success, int(not_fooled.sum()))
            if warning:
                warnings.append(warning)
        # Samples misclassified clean need no perturbation: norm 0, reported separately.
        l2 = torch.where(correct, outcome.l2, torch.zeros_like(outcome.l2))
        linf = torch.where(correct, outcome.linf, torch.zeros_like(outcome.linf))
        if distributed.is_main_process():
            self.store.save_sample_norms(
                context.key(spec, "minimum-norm"),
                l2=l2.numpy(),
                linf=linf.numpy(),
                fooled=fooled.numpy(),
            )

    def _sanity(
        self,
        context: _Context,
        spec: AttackSpec,
        kind: str,
        row: dict[str, Any],
        warnings: list[str],
    ) -> None:
        request = context.request
        n = len(context.labels)
        target = context.models.target
        attacked = context.models.source if kind == "transfer" else target
        robust_accuracy = row["robust_accuracy"]

        if kind == "white-box":
            fraction = self._cached(
                ("zero-gradient", id(target)),
                lambda: self._zero_gradient_fraction(target, context.images, context.labels),
            )
            row["zero_gradient_fraction"] = fraction
            warning = sanity.check_zero_gradients(fraction)
            if warning:
                warnings.append(warning)

        if spec.name != "fgsm" and spec.norm == "linf":
            fgsm = attack_lib.make_spec("fgsm", norm="linf", epsilon=spec.epsilon)
            fgsm_accuracy = self._cached(
                ("fgsm", id(attacked), spec.epsilon),
                lambda: self._robust_accuracy(context, attacked, fgsm),
            )
            row["fgsm_robust_accuracy"] = fgsm_accuracy
            if kind == "white-box":
                warning = sanity.check_iterative_vs_fgsm(
                    spec.label, robust_accuracy, fgsm_accuracy, n
                )
                if warning:
                    warnings.append(warning)

        if kind == "white-box" and spec.norm == "linf" and spec.name in sanity.STRONGER_THAN_BIM:
            # BIM's accuracy on the same examples also shows how much the stronger attack adds.
            bim = attack_lib.make_spec("bim", norm="linf", epsilon=spec.epsilon)
            bim_accuracy = self._cached(
                ("bim", id(target), spec.epsilon),
                lambda: self._robust_accuracy(context, target, bim),
            )
            row["bim_robust_accuracy"] = bim_accuracy
            warning = sanity.check_stronger_vs_bim(spec.label, robust_accuracy, bim_accuracy, n)
            if warning:
                warnings.append(warning)

        if kind == "white-box":
            input_numel = int(context.images[0].numel()) if n else 1
            epsilon = sanity.large_epsilon(spec.norm, input_numel)
            probe_name = "bim" if spec.norm == "linf" else "pgd"
            probe = attack_lib.make_spec(probe_name, norm=spec.norm, epsilon=epsilon, steps=20)
            probe_examples = min(n, 200)
            accuracy = self._cached(
                ("large-epsilon", id(target), spec.norm),
                lambda: self._robust_accuracy(context, target, probe, limit=probe_examples),
            )
            row["large_epsilon_robust_accuracy"] = accuracy
            warning = sanity.check_large_epsilon(accuracy, epsilon, spec.norm)
            if warning:
                warnings.append(warning)

        if request.transfer_from is not None:
            other_kind = "transfer" if kind == "white-box" else "white-box"
            other = self._cached_row(context, spec, other_kind)
            if other is not None:
                white = robust_accuracy if kind == "white-box" else other["robust_accuracy"]
                transfer = other["robust_accuracy"] if kind == "white-box" else robust_accuracy
                row["transfer_robust_accuracy"] = transfer
                warning = sanity.check_white_box_vs_transfer(
                    white, transfer, request.transfer_from, n
                )
                if warning:
                    warnings.append(warning)
        self._cache[("row", spec.label, kind)] = dict(row)

    def _cached_row(self, context: _Context, spec: AttackSpec, kind: str) -> dict | None:
        row = self._cache.get(("row", spec.label, kind))
        if row is None:
            row = self.store.get(context.key(spec, kind))
            row = distributed.broadcast_object(row, f"stored row {spec.label} {kind}")
        return row

    def _robust_accuracy(
        self,
        context: _Context,
        model: nn.Module,
        spec: AttackSpec,
        limit: int | None = None,
    ) -> float:
        images = context.images[:limit]
        labels = context.labels[:limit]
        if not len(labels):
            return math.nan
        attacked = self._attack_examples(
            model, context.models.target, images, labels, spec, context.request.seed
        )
        robust = context.clean_correct[:limit] & attacked.adversarial_correct
        return float(robust.float().mean())

    def _cached(self, key: tuple, compute: Callable[[], float]) -> float:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


@dataclass
class _Context:
    request: EvaluationRequest
    models: _Models
    images: Tensor
    labels: Tensor
    clean_correct: Tensor
    clean_accuracy: float

    def model_name(self) -> str:
        return self.request.model

    def source_name(self, kind: str) -> str:
        if kind != "transfer":
            return ""
        seed = self.request.transfer_seed
        if seed is None or seed == self.request.seed:
            return str(self.request.transfer_from)
        return f"{self.request.transfer_from}-seed{seed}"

    def key(self, spec: AttackSpec, kind: str) -> dict[str, Any]:
        config = self.models.target_config
        return {
            "dataset": self.request.dataset,
            "arch": config.arch,
            "model": self.request.model,
            "angular": config.angular,
            "training": config.training,
            "attack": spec.name,
            "norm": spec.norm,
            "epsilon": math.nan if spec.epsilon is None else float(spec.epsilon),
            "kind": kind,
            "source": self.source_name(kind),
            "seed": self.request.seed,
            "checkpoint": config.name,
        }

    def base_row(self, spec: AttackSpec, kind: str) -> dict[str, Any]:
        row = self.key(spec, kind)
        row.update(
            clean_accuracy=self.clean_accuracy,
            n_examples=len(self.labels),
            n_clean_correct=int(self.clean_correct.sum()),
            checkpoint=self.models.target_config.name,
            robustdc_version=robustdc.__version__,
            torch_version=torch.__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        return row


def _norm_stats(l2: Tensor, linf: Tensor) -> dict[str, float]:
    stats: dict[str, float] = {}
    for name, values in (("l2", l2), ("linf", linf)):
        array = values.numpy()
        if array.size:
            stats[f"{name}_median"] = float(np.median(array))
            stats[f"{name}_mean"] = float(array.mean())
            stats[f"{name}_p10"] = float(np.percentile(array, 10))
            stats[f"{name}_p90"] = float(np.percentile(array, 90))
        else:
            for stat in ("median", "mean", "p10", "p90"):
                stats[f"{name}_{stat}"] = math.nan
    return stats


def rescale_epsilon(spec: AttackSpec, epsilon: float) -> AttackSpec:
    """Return ``spec`` at another epsilon, with its step size scaled in proportion."""
    step_size = None
    if spec.step_size is not None and spec.epsilon and spec.name != "fgsm":
        step_size = spec.step_size * epsilon / spec.epsilon
    return attack_lib.make_spec(
        spec.name,
        norm=spec.norm,
        epsilon=epsilon,
        steps=spec.steps,
        step_size=step_size,
        restarts=spec.restarts,
        library=spec.library,
        **dict(spec.params),
    )


def with_epsilons(specs: Sequence[AttackSpec], epsilons: Sequence[float]) -> list[AttackSpec]:
    """Repeat every bounded spec once per epsilon; minimum-norm specs stay as they are."""
    result: list[AttackSpec] = []
    for spec in specs:
        if spec.epsilon is None:
            result.append(spec)
            continue
        for epsilon in epsilons:
            result.append(rescale_epsilon(spec, epsilon))
    return result
