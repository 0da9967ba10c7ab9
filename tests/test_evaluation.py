"""Tests of the evaluation harness on real MNIST models and real attacks."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from robustdc.attacks import AttackOutput, make_spec, run_attack
from robustdc.evaluation import (
    EvaluationRequest,
    Evaluator,
    InvariantError,
    check_adversarial,
    with_epsilons,
)
from robustdc.results import ResultsStore

# Small models keep the file fast: one epoch on 3,000 real MNIST images.
TRAIN_OVERRIDES = {"epochs": 1, "train_limit": 3000, "batch_size": 64}
N_EXAMPLES = 64


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory) -> Path:
    """A workdir holding trained tanhconv and baseline checkpoints."""
    workdir = tmp_path_factory.mktemp("trained")
    evaluator = Evaluator(workdir, progress=False)
    for model in ("tanhconv", "baseline"):
        request = EvaluationRequest(
            model, [], train_overrides=TRAIN_OVERRIDES, n_examples=N_EXAMPLES
        )
        evaluator.evaluate(request)
    return workdir


@pytest.fixture
def workdir(trained_workdir, tmp_path) -> Path:
    shutil.copytree(trained_workdir / "models", tmp_path / "models")
    return tmp_path


def _request(attacks, **changes) -> EvaluationRequest:
    values = dict(
        model="tanhconv",
        attacks=attacks,
        n_examples=N_EXAMPLES,
        train_overrides=TRAIN_OVERRIDES,
        allow_train=False,
    )
    values.update(changes)
    return EvaluationRequest(**values)


def assert_attack_bites(row: dict) -> None:
    """The attack must remove most robustness of a naturally trained model at 0.3."""
    assert row["clean_accuracy"] > 0.8
    assert row["robust_accuracy"] < 0.5 * row["clean_accuracy"]
    assert json.loads(row["warnings"]) == []


def identity_attack(model, images, labels, spec, **kwargs) -> AttackOutput:
    """A broken "attack" that returns its input unchanged."""
    output = run_attack(model, images[:1], labels[:1], spec, seed=0)
    zeros = torch.zeros(len(images), dtype=torch.float64)
    return replace(
        output,
        x_adv=images.clone(),
        per_sample_l2=zeros,
        per_sample_linf=zeros,
        success=None,
        seconds=0.0,
    )


def test_bim_row_is_complete(workdir):
    spec = make_spec("bim", epsilon=0.3)
    report = Evaluator(workdir, progress=False).evaluate(_request([spec]))
    assert len(report.rows) == 1
    row = report.rows[0]
    assert_attack_bites(row)
    assert row["kind"] == "white-box"
    assert row["n_examples"] == N_EXAMPLES
    assert row["library"] == "torchattacks"
    assert row["linf_median"] <= 0.3 + 1e-6
    assert row["fgsm_robust_accuracy"] >= row["robust_accuracy"]
    assert row["large_epsilon_robust_accuracy"] <= 0.1
    assert 0 <= row["zero_gradient_fraction"] <= 1
    stored = ResultsStore(workdir).read()
    assert len(stored) == 1
    assert stored.loc[0, "robust_accuracy"] == pytest.approx(row["robust_accuracy"])


def test_identity_attack_fails_bite_check(workdir):
    spec = make_spec("bim", epsilon=0.3)
    evaluator = Evaluator(workdir, progress=False, run_attack=identity_attack)
    row = evaluator.evaluate(_request([spec])).rows[0]
    with pytest.raises(AssertionError):
        assert_attack_bites(row)
    warnings = json.loads(row["warnings"])
    assert any("returned every correctly classified input unchanged" in w for w in warnings)
    assert any("huge epsilon" in w for w in warnings)
    assert row["robust_accuracy"] == row["clean_accuracy"]


def test_identity_attack_weaker_than_fgsm(workdir):
    spec = make_spec("bim", epsilon=0.3)

    def identity_bim_only(model, images, labels, spec, **kwargs):
        if spec.name == "bim" and spec.epsilon == 0.3:
            return identity_attack(model, images, labels, spec, **kwargs)
        return run_attack(model, images, labels, spec, **kwargs)

    evaluator = Evaluator(workdir, progress=False, run_attack=identity_bim_only)
    row = evaluator.evaluate(_request([spec])).rows[0]
    warnings = json.loads(row["warnings"])
    assert any("weaker than single-step FGSM" in w for w in warnings)


def test_pgd_row_records_bim_on_same_examples(workdir):
    spec = make_spec("pgd", epsilon=0.1, steps=20)
    row = Evaluator(workdir, progress=False).evaluate(_request([spec])).rows[0]

    bim = make_spec("bim", epsilon=0.1)
    alone = Evaluator(workdir, progress=False).evaluate(_request([bim])).rows[0]
    assert row["bim_robust_accuracy"] == pytest.approx(alone["robust_accuracy"])
    stored = ResultsStore(workdir).read().set_index("attack")
    assert math.isnan(stored.loc["bim", "bim_robust_accuracy"])
    assert stored.loc["pgd", "bim_robust_accuracy"] == pytest.approx(alone["robust_accuracy"])
    assert json.loads(row["warnings"]) == []


def test_identity_pgd_weaker_than_bim(workdir):
    spec = make_spec("pgd", epsilon=0.3, steps=20)

    def identity_pgd(model, images, labels, spec, **kwargs):
        if spec.name == "pgd":
            return identity_attack(model, images, labels, spec, **kwargs)
        return run_attack(model, images, labels, spec, **kwargs)

    evaluator = Evaluator(workdir, progress=False, run_attack=identity_pgd)
    row = evaluator.evaluate(_request([spec])).rows[0]
    warnings = json.loads(row["warnings"])
    assert row["bim_robust_accuracy"] < row["robust_accuracy"]
    assert any("weaker than 10-step BIM" in w for w in warnings)


def test_attack_leaving_train_mode_rejected(workdir):
    def leaves_train_mode(model, images, labels, spec, **kwargs):
        output = run_attack(model, images, labels, spec, **kwargs)
        model.train()
        return output

    evaluator = Evaluator(workdir, progress=False, run_attack=leaves_train_mode)
    with pytest.raises(InvariantError, match="different train/eval mode"):
        evaluator.evaluate(_request([make_spec("fgsm", epsilon=0.1)]))
    assert ResultsStore(workdir).read().empty


def test_attack_in_train_mode_changes_batchnorm(workdir):
    def runs_in_train_mode(model, images, labels, spec, **kwargs):
        modes = [m.training for m in model.modules()]
        model.train()
        with torch.no_grad():
            model(images[:16])
        for module, mode in zip(model.modules(), modes, strict=True):
            module.train(mode)
        return run_attack(model, images, labels, spec, **kwargs)

    evaluator = Evaluator(workdir, progress=False, run_attack=runs_in_train_mode)
    with pytest.raises(InvariantError, match="changed the model buffer"):
        evaluator.evaluate(_request([make_spec("fgsm", epsilon=0.1)]))


def test_attack_leaving_gradients_rejected(workdir):
    def leaves_gradients(model, images, labels, spec, **kwargs):
        output = run_attack(model, images, labels, spec, **kwargs)
        model(images[:2]).sum().backward()
        return output

    evaluator = Evaluator(workdir, progress=False, run_attack=leaves_gradients)
    with pytest.raises(InvariantError, match="changed the gradient of parameter"):
        evaluator.evaluate(_request([make_spec("fgsm", epsilon=0.1)]))


def test_attack_beyond_epsilon_rejected(workdir):
    def overshoots(model, images, labels, spec, **kwargs):
        output = run_attack(model, images, labels, spec, **kwargs)
        output.x_adv = (images + 2 * spec.epsilon).clamp(0, 1)
        return output

    evaluator = Evaluator(workdir, progress=False, run_attack=overshoots)
    with pytest.raises(InvariantError, match="farther than epsilon 0.1"):
        evaluator.evaluate(_request([make_spec("fgsm", epsilon=0.1)]))
    assert ResultsStore(workdir).read().empty


def test_attack_outside_bounds_rejected(workdir):
    def escapes_bounds(model, images, labels, spec, **kwargs):
        output = run_attack(model, images, labels, spec, **kwargs)
        output.x_adv = output.x_adv.clone()
        output.x_adv[0, 0, 0, 0] = 1.05
        return output

    evaluator = Evaluator(workdir, progress=False, run_attack=escapes_bounds)
    with pytest.raises(InvariantError, match=r"outside the bounds \[0, 1\]"):
        evaluator.evaluate(_request([make_spec("fgsm", epsilon=0.1)]))


def test_check_adversarial_l2_budget():
    x = torch.zeros(2, 1, 4, 4)
    x_adv = x.clone()
    x_adv[0, 0, 0, :2] = 0.6  # L2 norm 0.85
    check_adversarial(x, x_adv, norm="l2", epsilon=0.9, bounds=(0, 1), attack_label="t")
    with pytest.raises(InvariantError, match="1 example"):
        check_adversarial(x, x_adv, norm="l2", epsilon=0.8, bounds=(0, 1), attack_label="t")


def test_deepfool_one_step_flags_unfooled(workdir):
    spec = make_spec("deepfool", norm="l2", steps=1)
    request = _request([spec], n_examples=32)
    row = Evaluator(workdir, progress=False).evaluate(request).rows[0]
    assert row["kind"] == "minimum-norm"
    assert math.isnan(row["epsilon"])
    assert row["n_not_fooled"] > 0
    assert row["deepfool_success_rate"] < 0.95
    assert any("DeepFool flipped only" in w for w in json.loads(row["warnings"]))
    norms = ResultsStore(workdir).load_sample_norms(row)
    assert len(norms.l2) == 32
    assert (norms.l2[~norms.fooled] >= 0).all()


def test_deepfool_full_flips_almost_all(workdir):
    spec = make_spec("deepfool", norm="l2")
    row = Evaluator(workdir, progress=False).evaluate(_request([spec])).rows[0]
    assert row["deepfool_success_rate"] >= 0.95
    assert row["l2_median"] > 0
    assert json.loads(row["warnings"]) == []


def test_transfer_uses_source_gradients_only(workdir):
    calls = []

    def spy(model, images, labels, spec, **kwargs):
        calls.append(model)
        return run_attack(model, images, labels, spec, **kwargs)

    evaluator = Evaluator(workdir, progress=False, run_attack=spy)
    request = _request([make_spec("fgsm", epsilon=0.2)], transfer_from="baseline")
    grad_enabled = []
    original_evaluate = evaluator._evaluate_one

    def evaluate_one(context, spec, kind):
        if kind == "transfer":
            hook = context.models.target.register_forward_hook(
                lambda *args: grad_enabled.append(torch.is_grad_enabled())
            )
            calls.clear()
            try:
                return original_evaluate(context, spec, kind)
            finally:
                hook.remove()
                # Only the first call crafts the examples; sanity probes may follow.
                assert calls[0] is context.models.source
        return original_evaluate(context, spec, kind)

    evaluator._evaluate_one = evaluate_one
    report = evaluator.evaluate(request)
    kinds = {row["kind"]: row for row in report.rows}
    assert set(kinds) == {"white-box", "transfer"}
    assert kinds["transfer"]["source"] == "baseline"
    assert grad_enabled and not any(grad_enabled)
    assert not math.isnan(kinds["transfer"]["transfer_robust_accuracy"])


def test_rerun_skips_finished_rows(workdir):
    spec = make_spec("fgsm", epsilon=0.1)
    first = Evaluator(workdir, progress=False).evaluate(_request([spec]))
    second = Evaluator(workdir, progress=False).evaluate(_request([spec]))
    assert len(first.rows) == 1
    assert second.rows == []
    assert len(second.reused) == 1
    forced = Evaluator(workdir, progress=False).evaluate(_request([spec], force=True))
    assert len(forced.rows) == 1
    assert len(ResultsStore(workdir).read()) == 1


def test_with_epsilons_scales_step_size():
    spec = make_spec("bim", epsilon="8/255", step_size="1/255", steps=10)
    (scaled,) = with_epsilons([spec], [16 / 255])
    assert scaled.epsilon == pytest.approx(16 / 255)
    assert scaled.step_size == pytest.approx(2 / 255)
    deepfool = make_spec("deepfool", norm="l2")
    assert with_epsilons([deepfool], [0.1, 0.2]) == [deepfool]


def test_missing_checkpoint_without_training(tmp_path):
    request = _request([make_spec("fgsm", epsilon=0.1)])
    with pytest.raises(Exception, match="no finished checkpoint"):
        Evaluator(tmp_path, progress=False).evaluate(replace(request, allow_train=False))


def test_sanity_values_stay_with_their_model(workdir):
    evaluator = Evaluator(workdir, progress=False)
    spec = make_spec("fgsm", epsilon=0.1)

    first = evaluator.evaluate(_request([spec], transfer_from="baseline")).rows
    second = evaluator.evaluate(_request([spec], model="baseline", transfer_from="tanhconv")).rows

    assert {row["kind"] for row in first} == {"white-box", "transfer"}
    second_rows = {row["kind"]: row for row in second}
    # The second white-box row runs before its own transfer row exists, so it has no
    # transfer value to compare with. Before the cache was reset per request, it took
    # the first model's transfer row.
    assert second_rows["transfer"]["transfer_robust_accuracy"] == pytest.approx(
        second_rows["transfer"]["robust_accuracy"]
    )
    assert "transfer_robust_accuracy" not in second_rows["white-box"] or math.isnan(
        second_rows["white-box"]["transfer_robust_accuracy"]
    )
