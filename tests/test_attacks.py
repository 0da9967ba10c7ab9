"""Tests of the attack specs, suites and library adapters, on a small trained MNIST model.

The model is a narrow cnn9 trained for two epochs on 2,000 real MNIST images from the
embedded sample (about 90% test accuracy). Every attack check would fail for an attack
that returns its input unchanged: it asserts a drop in accuracy, flipped labels or a
nonzero perturbation.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustdc.attacks import (
    ATTACKS,
    AttackError,
    AttackSpec,
    list_attacks,
    list_suites,
    load_suite,
    make_spec,
    perturbation_norms,
    run_attack,
    torchattacks_adapter,
)
from robustdc.attacks.suites import SUITES_DIR
from robustdc.data import load_dataset
from robustdc.models import build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
N_TRAIN = 2000
N_TEST = 64
# Images per smoke run of every attack, norm and library, with reduced settings.
RUN_IMAGES = 8
# Images of the other small checks: enough that each attack has something to do.
SMOKE_IMAGES = 16
# DeepFool with its default 10 candidate classes is the slowest default-setting run.
DEEPFOOL_IMAGES = 32
MNIST_EPSILON = {"linf": 0.3, "l2": 2.0}
# Tolerance of the epsilon check: libraries clip in float32.
FLOAT32_SLACK = 1e-6


def _train_mnist_model() -> nn.Module:
    torch.manual_seed(0)
    train = load_dataset("mnist-sample", "train", limit=N_TRAIN)
    images = train.images.float() / 255.0
    labels = train.labels
    model = build_model(
        "cnn9", "baseline", in_channels=1, width=0.25, mean=(0.1307,), std=(0.3081,)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(2):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 32):
            batch = order[start : start + 32]
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    for parameter in model.parameters():
        parameter.grad = None
    return model


@pytest.fixture(scope="module")
def trained_model() -> nn.Module:
    return _train_mnist_model()


@pytest.fixture
def model(trained_model: nn.Module) -> nn.Module:
    # A fresh copy per test, so a test that changes modes or gradients affects no other.
    return copy.deepcopy(trained_model)


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    test = load_dataset("mnist-sample", "test", limit=N_TEST)
    return test.images.float() / 255.0, test.labels


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def predictions(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(1)


def test_trained_model_accuracy(model, test_images):
    images, labels = test_images
    assert accuracy(model, images, labels) >= 0.8


# Specs.


def test_registry_names():
    assert list_attacks() == ["fgsm", "bim", "pgd", "cw", "deepfool", "square", "autoattack"]


@pytest.mark.parametrize(
    ("name", "kind", "norms"),
    [
        ("fgsm", "bounded", ("linf",)),
        ("bim", "bounded", ("linf",)),
        ("pgd", "bounded", ("linf", "l2")),
        ("cw", "minimum-norm", ("l2",)),
        ("deepfool", "minimum-norm", ("l2", "linf")),
        ("square", "bounded", ("linf", "l2")),
        ("autoattack", "bounded", ("linf", "l2")),
    ],
)
def test_registry_kinds_and_norms(name, kind, norms):
    assert ATTACKS[name].kind == kind
    assert ATTACKS[name].norms == norms


def test_registry_deepfool_libraries():
    info = ATTACKS["deepfool"]
    assert info.libraries_by_norm["l2"] == ("foolbox", "torchattacks")
    assert info.libraries_by_norm["linf"] == ("foolbox",)
    assert info.default_library("l2") == "foolbox"
    assert info.libraries == ("foolbox", "torchattacks")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"name": "fgsm", "epsilon": "8/255"},
            {"norm": "linf", "epsilon": 8 / 255, "steps": 1, "step_size": 8 / 255},
            id="fgsm",
        ),
        pytest.param(
            {"name": "bim", "epsilon": "8/255"},
            {"steps": 10, "step_size": 1.25 * (8 / 255) / 10, "library": "torchattacks"},
            id="bim",
        ),
        pytest.param(
            {"name": "pgd", "epsilon": 0.3, "norm": "l2"},
            {"steps": 20, "step_size": 2.5 * 0.3 / 20, "params": {"random_start": True}},
            id="pgd-l2",
        ),
        pytest.param(
            {"name": "deepfool"},
            {
                "norm": "l2",
                "epsilon": None,
                "steps": 50,
                "library": "foolbox",
                "params": {"overshoot": 0.02, "candidates": 10},
            },
            id="deepfool",
        ),
        pytest.param(
            {"name": "deepfool", "library": "torchattacks"},
            {"steps": 50, "params": {"overshoot": 0.02}},
            id="deepfool-torchattacks",
        ),
        pytest.param(
            {"name": "cw"},
            {
                "library": "foolbox",
                "steps": 200,
                "step_size": 0.05,
                "params": {"binary_search_steps": 5, "initial_const": 1e-2, "kappa": 0.0},
            },
            id="cw",
        ),
        pytest.param(
            {"name": "square", "epsilon": 0.1},
            {"steps": None, "step_size": None, "params": {"queries": 5000, "p_init": 0.8}},
            id="square",
        ),
        pytest.param(
            {"name": "autoattack", "epsilon": 0.1},
            {"steps": 100, "params": {"queries": 5000, "target_classes": 9}},
            id="autoattack",
        ),
    ],
)
def test_make_spec_defaults(kwargs, expected):
    spec = make_spec(**kwargs)
    for field_name, value in expected.items():
        actual = getattr(spec, field_name)
        if field_name == "params":
            actual = dict(actual)
        if isinstance(value, float):
            assert actual == pytest.approx(value), field_name
        else:
            assert actual == value, field_name


def test_make_spec_paper_bim_step():
    # The default BIM step at 8/255 and 10 steps is 1/255, the step Liu et al. use on CIFAR-10.
    assert make_spec("bim", epsilon="8/255").step_size == pytest.approx(1 / 255)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        pytest.param("pdg", {}, "unknown attack 'pdg'.*Did you mean 'pgd'", id="typo"),
        pytest.param("bim", {"epsilon": 8}, r"did you mean 8/255", id="eps-255-scale"),
        pytest.param("bim", {"epsilon": "8"}, r"did you mean 8/255", id="eps-text"),
        pytest.param("bim", {"epsilon": -0.1}, ">= 0", id="eps-negative"),
        pytest.param("bim", {"epsilon": "eight"}, "invalid epsilon", id="eps-word"),
        pytest.param("bim", {}, "needs an epsilon", id="eps-missing"),
        pytest.param("bim", {"epsilon": 0.1, "norm": "l2"}, "expected one of: linf", id="norm"),
        pytest.param("pgd", {"epsilon": 0.1, "norm": "L3"}, "linf, l2", id="norm-unknown"),
        pytest.param("bim", {"epsilon": 0.1, "steps": 0}, "steps of bim.*>= 1", id="steps-0"),
        pytest.param("bim", {"epsilon": 0.1, "steps": 2.5}, "integer", id="steps-float"),
        pytest.param("fgsm", {"epsilon": 0.1, "steps": 3}, "always runs 1", id="fgsm-steps"),
        pytest.param("fgsm", {"epsilon": 0.1, "step_size": 0.2}, "its epsilon", id="fgsm-step"),
        pytest.param("bim", {"epsilon": 0.1, "step_size": 0}, r"\(0, inf\]", id="step-0"),
        pytest.param("deepfool", {"epsilon": 0.1}, "takes no epsilon", id="deepfool-eps"),
        pytest.param("deepfool", {"step_size": 0.1}, "takes no step_size", id="deepfool-step"),
        pytest.param("square", {"epsilon": 0.1, "steps": 10}, "set queries", id="square-steps"),
        pytest.param(
            "square", {"epsilon": 0.1, "querys": 10}, "Did you mean 'queries'", id="param-typo"
        ),
        pytest.param("square", {"epsilon": 0.1, "queries": 0}, ">= 1", id="queries-0"),
        pytest.param("cw", {"c": 2.0}, "torchattacks only", id="param-library"),
        pytest.param("bim", {"epsilon": 0.1, "restarts": 3}, "takes no restarts", id="restarts"),
        pytest.param("pgd", {"epsilon": 0.1, "library": "art"}, "unknown library", id="library"),
        pytest.param(
            "deepfool", {"norm": "linf", "library": "torchattacks"}, "from torchattacks", id="lib"
        ),
        pytest.param("pgd", {"epsilon": 0.1, "random_start": 1}, "true or false", id="bool"),
    ],
)
def test_make_spec_rejects(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_spec(name, **kwargs)


def test_l2_epsilon_may_exceed_one():
    assert make_spec("pgd", norm="l2", epsilon=2.0).epsilon == 2.0


def test_spec_label():
    assert make_spec("bim", epsilon="8/255").label == "bim-linf-eps0.0314"
    assert make_spec("deepfool", norm="linf").label == "deepfool-linf"
    assert make_spec("deepfool", library="torchattacks").label == "deepfool-l2-torchattacks"


def test_spec_to_dict_is_json():
    spec = make_spec("square", epsilon=0.1, queries=100)
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["params"] == {"p_init": 0.8, "queries": 100}
    assert data["kind"] == "bounded"
    assert data["label"] == "square-linf-eps0.1"


def test_spec_hashable_and_picklable():
    spec = make_spec("pgd", epsilon=0.1, restarts=2)
    assert spec == make_spec("pgd", epsilon=0.1, restarts=2)
    assert len({spec, make_spec("pgd", epsilon=0.1, restarts=2)}) == 1
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_spec_params_read_only():
    spec = make_spec("square", epsilon=0.1)
    with pytest.raises(TypeError):
        spec.params["queries"] = 1  # type: ignore[index]


def test_spec_constructor_validates():
    with pytest.raises(ValueError, match="takes no epsilon"):
        AttackSpec("deepfool", "l2", 0.1, 50, None, 1, "foolbox")
    spec = AttackSpec("deepfool", "l2", None, 50, None, 1, "foolbox")
    assert dict(spec.params) == {"candidates": 10, "overshoot": 0.02}


# Suites.


def test_suites_shipped():
    assert list_suites() == ["default", "paper", "strong"]


@pytest.mark.parametrize("name", ["default", "paper", "strong"])
def test_suite_copies_identical(name):
    shipped = (SUITES_DIR / f"{name}.toml").read_bytes()
    assert (REPO_ROOT / "attacks" / f"{name}.toml").read_bytes() == shipped


def test_suite_top_level_folder_complete():
    top_level = sorted(path.name for path in (REPO_ROOT / "attacks").glob("*.toml"))
    assert top_level == sorted(path.name for path in SUITES_DIR.glob("*.toml"))


def test_paper_suite_cifar10_settings():
    fgsm, bim = load_suite("paper", "cifar10")
    assert (fgsm.name, fgsm.norm, fgsm.epsilon) == ("fgsm", "linf", 8 / 255)
    assert (bim.name, bim.norm, bim.epsilon) == ("bim", "linf", 8 / 255)
    assert bim.step_size == 1 / 255
    assert bim.steps == 10


def test_paper_suite_mnist_settings():
    specs = load_suite("paper", "mnist")
    assert [spec.label for spec in specs] == [
        "fgsm-linf-eps0.1",
        "fgsm-linf-eps0.3",
        "bim-linf-eps0.1",
        "bim-linf-eps0.3",
    ]
    assert all(spec.step_size == 0.01 and spec.steps == 40 for spec in specs[2:])


def test_suite_alias_mnist_sample():
    assert load_suite("paper", "mnist-sample") == load_suite("paper", "mnist")


@pytest.mark.parametrize("suite", ["default", "paper", "strong"])
@pytest.mark.parametrize("dataset", ["mnist-sample", "mnist", "cifar10", "cifar100"])
def test_suite_loads(suite, dataset):
    specs = load_suite(suite, dataset)
    assert specs
    assert all(isinstance(spec, AttackSpec) for spec in specs)


def test_default_suite_has_deepfool_both_norms():
    for dataset in ("mnist", "fashion-mnist", "cifar10"):
        labels = [spec.label for spec in load_suite("default", dataset)]
        assert "deepfool-l2" in labels
        assert "deepfool-linf" in labels


def test_suite_unknown_dataset():
    with pytest.raises(ValueError, match="no attacks for dataset 'svhn'.*cifar10"):
        load_suite("paper", "svhn")


def test_suite_unknown_name():
    with pytest.raises(ValueError, match="unknown attack suite 'papr'.*Did you mean 'paper'"):
        load_suite("papr", "mnist")


def test_suite_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_suite(tmp_path / "none.toml", "mnist")


def test_suite_from_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        '[[mnist]]\nattack = "pgd"\nnorm = "l2"\nepsilon = ["1/2", 1.5]\nrestarts = 2\n'
        '\n[[mnist]]\nattack = "square"\nepsilon = 0.2\nqueries = 100\n'
    )
    specs = load_suite(path, "mnist")
    assert [spec.label for spec in specs] == [
        "pgd-l2-eps0.5",
        "pgd-l2-eps1.5",
        "square-linf-eps0.2",
    ]
    assert specs[0].restarts == 2
    assert specs[2].params["queries"] == 100


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param("[[mnist]\n", "not valid TOML", id="toml"),
        pytest.param('[[mnist]]\nnorm = "linf"\n', "entry 1: missing key 'attack'", id="attack"),
        pytest.param(
            '[[mnist]]\nattack = "fgsm"\nepsilon = 0.1\n[[mnist]]\nattack = "bim"\nepsilon = 8\n',
            r"\[\[mnist\]\] entry 2: .*did you mean 8/255",
            id="entry-2",
        ),
        pytest.param('[mnist]\nattack = "fgsm"\n', "array of tables", id="table"),
        pytest.param('[aliases]\nfoo = "bar"\n', "names no table", id="alias"),
        pytest.param(
            '[[mnist]]\nattack = "fgsm"\nepsilon = [0.1, 0.1]\n', "repeats fgsm", id="repeat"
        ),
        pytest.param('[[mnist]]\nattack = "fgsm"\nepsilon = []\n', "empty array", id="empty"),
    ],
)
def test_suite_rejects_invalid_file(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_suite(path, "mnist")


# Running every attack through its library.

RUN_CASES = [
    (name, norm, library)
    for name, info in ATTACKS.items()
    for norm, libraries in info.libraries_by_norm.items()
    for library in libraries
]

# Reduced settings that keep each smoke run to a few seconds on a CPU.
FAST_SETTINGS = {
    "cw": {"steps": 30},
    "deepfool": {"steps": 10},
    "square": {"queries": 100},
    "autoattack": {"steps": 10, "queries": 100},
}


def fast_spec(name: str, norm: str, library: str) -> AttackSpec:
    settings = dict(FAST_SETTINGS.get(name, {}))
    if name == "cw" and library == "foolbox":
        settings.update(binary_search_steps=2, initial_const=1.0)
    if ATTACKS[name].kind == "bounded":
        settings["epsilon"] = MNIST_EPSILON[norm]
    return make_spec(name, norm=norm, library=library, **settings)


@pytest.mark.parametrize(
    ("name", "norm", "library"), RUN_CASES, ids=["-".join(case) for case in RUN_CASES]
)
def test_attack_runs(model, test_images, name, norm, library):
    images, labels = test_images
    # torchattacks' DeepFool computes a full Jacobian per image and step.
    count = 4 if (name, library) == ("deepfool", "torchattacks") else RUN_IMAGES
    images, labels = images[:count], labels[:count]
    spec = fast_spec(name, norm, library)

    output = run_attack(model, images, labels, spec, batch_size=8)

    assert output.x_adv.shape == images.shape
    assert output.x_adv.dtype == torch.float32
    assert output.x_adv.device.type == "cpu"
    assert output.x_adv.min() >= 0
    assert output.x_adv.max() <= 1
    assert output.per_sample_l2.shape == (count,)
    assert output.per_sample_linf.shape == (count,)
    assert output.per_sample_l2.max() > 0, "the attack changed no image"
    if spec.kind == "bounded":
        norms = output.per_sample_linf if norm == "linf" else output.per_sample_l2
        assert norms.max() <= spec.epsilon + FLOAT32_SLACK * (1 if norm == "linf" else 100)
    assert output.info["library"] == library
    assert output.info["class"].startswith(library)
    assert output.info["spec"] == spec.to_dict()
    assert output.info["n_examples"] == count
    assert output.seconds > 0
    json.dumps(output.info)
    if library == "foolbox":
        assert output.success is not None
        assert output.success.shape == (count,)
    else:
        assert output.success is None


@pytest.mark.parametrize("library", ["torchattacks", "foolbox"])
@pytest.mark.parametrize("name", ["bim", "pgd"])
def test_iterative_attack_breaks_model(model, test_images, name, library):
    images, labels = test_images
    clean = accuracy(model, images, labels)
    spec = make_spec(name, epsilon=0.3, library=library, steps=20, step_size=0.025)

    output = run_attack(model, images, labels, spec)

    robust = accuracy(model, output.x_adv, labels)
    assert clean >= 0.8
    assert robust <= 0.1
    assert output.per_sample_linf.max() <= 0.3 + FLOAT32_SLACK


@pytest.fixture(scope="module")
def fgsm_output(trained_model, test_images):
    images, labels = test_images
    return run_attack(trained_model, images, labels, make_spec("fgsm", epsilon=0.3))


@pytest.fixture(scope="module")
def deepfool_outputs(trained_model, test_images):
    images, labels = test_images[0][:DEEPFOOL_IMAGES], test_images[1][:DEEPFOOL_IMAGES]
    return {
        norm: run_attack(trained_model, images, labels, make_spec("deepfool", norm=norm))
        for norm in ("l2", "linf")
    }


def test_fgsm_lowers_accuracy(model, test_images, fgsm_output):
    images, labels = test_images
    assert accuracy(model, fgsm_output.x_adv, labels) <= accuracy(model, images, labels) - 0.3
    # FGSM moves every pixel that has a nonzero gradient by exactly epsilon.
    assert fgsm_output.per_sample_linf.max() == pytest.approx(0.3, abs=FLOAT32_SLACK)


def test_fgsm_libraries_agree(model, test_images, fgsm_output):
    images, labels = test_images
    spec = make_spec("fgsm", epsilon=0.3, library="foolbox")
    foolbox_output = run_attack(model, images, labels, spec)
    same = (fgsm_output.x_adv - foolbox_output.x_adv).abs() <= FLOAT32_SLACK
    assert same.float().mean() >= 0.99


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_flips_almost_all(model, test_images, deepfool_outputs, norm):
    images, labels = test_images[0][:DEEPFOOL_IMAGES], test_images[1][:DEEPFOOL_IMAGES]
    output = deepfool_outputs[norm]
    correct = predictions(model, images) == labels

    flipped = predictions(model, output.x_adv) != labels
    assert flipped[correct].float().mean() >= 0.95
    # foolbox's own success flags match the predictions.
    assert torch.equal(output.success, flipped)
    assert output.info["n_library_success"] == int(flipped.sum())


def test_deepfool_norms_minimal(model, test_images, deepfool_outputs, fgsm_output):
    images, labels = test_images[0][:DEEPFOOL_IMAGES], test_images[1][:DEEPFOOL_IMAGES]
    correct = predictions(model, images) == labels

    l2 = deepfool_outputs["l2"].per_sample_l2[correct]
    linf = deepfool_outputs["linf"].per_sample_linf[correct]
    fgsm_l2 = fgsm_output.per_sample_l2[:DEEPFOOL_IMAGES][correct]
    assert l2.min() > 0
    assert linf.min() > 0
    # A minimum-norm attack needs far less than a large Linf step, which moves most
    # pixels by 0.3.
    assert l2.median() < 0.5 * fgsm_l2.median()
    assert linf.median() < 0.3


def test_cw_foolbox_flips_most(model, test_images):
    images, labels = test_images[0][:8], test_images[1][:8]
    correct = predictions(model, images) == labels
    spec = make_spec("cw", steps=100, binary_search_steps=2, initial_const=1.0)

    output = run_attack(model, images, labels, spec)

    flipped = predictions(model, output.x_adv) != labels
    assert flipped[correct].float().mean() >= 0.8
    assert torch.equal(output.success, flipped)
    # Minimal perturbations. An all-zero image would be about 8 away in L2.
    assert output.per_sample_l2[correct & flipped].median() > 0
    assert output.per_sample_l2[correct & flipped].median() < 3


def test_cw_foolbox_failures_are_clean_images(model, test_images):
    # Two steps at a tiny constant find nothing. foolbox then returns all-zero images,
    # which the adapter must turn back into the clean images, not count as fooled.
    images, labels = test_images
    correct = predictions(model, images) == labels
    images, labels = images[correct][:8], labels[correct][:8]
    spec = make_spec("cw", steps=2, binary_search_steps=1, initial_const=1e-6)

    output = run_attack(model, images, labels, spec)

    assert not output.success.any()
    assert torch.equal(output.x_adv, images)
    assert output.per_sample_l2.max() == 0


@pytest.mark.parametrize("library", ["torchattacks", "foolbox"])
def test_pgd_restarts_compose(model, test_images, library):
    images, labels = test_images[0][:SMOKE_IMAGES], test_images[1][:SMOKE_IMAGES]
    spec = make_spec("pgd", epsilon=0.3, steps=5, restarts=3, library=library)

    output = run_attack(model, images, labels, spec)

    assert accuracy(model, output.x_adv, labels) <= 0.2
    assert output.per_sample_linf.max() <= 0.3 + FLOAT32_SLACK
    if library == "torchattacks":
        assert len(output.info["components"]) == 3
    else:
        assert output.info["repeated"] == 3


# AutoAttack settings.


def test_autoattack_reference_settings(model):
    spec = make_spec("autoattack", epsilon=0.3)
    prepared = torchattacks_adapter.prepare(
        model, spec, num_classes=10, device=torch.device("cpu"), seed=0
    )
    components = {part["role"]: part for part in prepared.info["components"]}

    assert prepared.info["class"] == "torchattacks.wrappers.multiattack.MultiAttack"
    assert list(components) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    apgd_ce = components["apgd-ce"]["settings"]
    assert (apgd_ce["steps"], apgd_ce["n_restarts"], apgd_ce["loss"]) == (100, 1, "ce")
    apgd_t = components["apgd-t"]["settings"]
    assert (apgd_t["steps"], apgd_t["n_restarts"], apgd_t["n_target_classes"]) == (100, 1, 9)
    fab_t = components["fab-t"]["settings"]
    assert (fab_t["steps"], fab_t["n_restarts"], fab_t["n_target_classes"]) == (100, 1, 9)
    assert fab_t["multi_targeted"] is True
    square = components["square"]["settings"]
    assert (square["n_queries"], square["p_init"], square["n_restarts"]) == (5000, 0.8, 1)
    assert square["rescale_schedule"] is False
    assert all(part["settings"]["eps"] == 0.3 for part in components.values())


def test_autoattack_few_classes(model):
    spec = make_spec("autoattack", epsilon=0.3)
    prepared = torchattacks_adapter.prepare(
        model, spec, num_classes=4, device=torch.device("cpu"), seed=0
    )
    components = {part["role"]: part for part in prepared.info["components"]}
    assert components["apgd-t"]["settings"]["n_target_classes"] == 3
    assert components["fab-t"]["settings"]["n_target_classes"] == 3


@pytest.mark.slow
@pytest.mark.parametrize(("norm", "epsilon"), [("linf", 0.1), ("l2", 1.0)])
def test_autoattack_full_settings(model, test_images, norm, epsilon):
    # At these budgets some images survive APGD-CE, so the targeted attacks and Square
    # run too, with the full reference settings.
    images, labels = test_images[0][:8], test_images[1][:8]
    spec = make_spec("autoattack", norm=norm, epsilon=epsilon)
    pgd = make_spec("pgd", norm=norm, epsilon=epsilon, steps=20)

    output = run_attack(model, images, labels, spec)
    pgd_output = run_attack(model, images, labels, pgd)

    assert accuracy(model, output.x_adv, labels) <= accuracy(model, pgd_output.x_adv, labels)
    assert accuracy(model, output.x_adv, labels) < accuracy(model, images, labels)
    norms = output.per_sample_linf if norm == "linf" else output.per_sample_l2
    assert norms.max() <= epsilon + 1e-4


@pytest.mark.slow
def test_torchattacks_deepfool_weaker(model, test_images):
    # Cross-check on 16 images: torchattacks' DeepFool flips fewer MNIST images than
    # foolbox's. A likely cause is that it clips to [0, 1] after every step.
    images, labels = test_images[0][:SMOKE_IMAGES], test_images[1][:SMOKE_IMAGES]
    flipped = {}
    for library in ("foolbox", "torchattacks"):
        output = run_attack(model, images, labels, make_spec("deepfool", library=library))
        flipped[library] = (predictions(model, output.x_adv) != labels).float().mean().item()
    assert flipped["foolbox"] >= flipped["torchattacks"]


# Model state.


def set_mixed_modes(model: nn.Module) -> list[bool]:
    model.train()
    for index, module in enumerate(model.modules()):
        if index % 3 == 0:
            module.eval()
    return [module.training for module in model.modules()]


@pytest.mark.parametrize("library", ["torchattacks", "foolbox"])
def test_modes_restored(model, test_images, library):
    images, labels = test_images[0][:8], test_images[1][:8]
    modes = set_mixed_modes(model)
    run_attack(model, images, labels, make_spec("pgd", epsilon=0.1, steps=2, library=library))
    assert [module.training for module in model.modules()] == modes


def test_attack_sees_eval_mode(model, test_images):
    images, labels = test_images[0][:8], test_images[1][:8]
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    model.train()
    run_attack(model, images, labels, make_spec("bim", epsilon=0.1, steps=2))
    assert seen
    assert not any(seen)


class FailingModel(nn.Module):
    """Wraps a model and raises from ``forward`` from the ``fail_at``-th call on."""

    def __init__(self, inner: nn.Module, fail_at: int) -> None:
        super().__init__()
        self.inner = inner
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("forward failed on purpose")
        return self.inner(x)


@pytest.mark.parametrize(
    ("name", "library"), [("pgd", "torchattacks"), ("pgd", "foolbox"), ("deepfool", "foolbox")]
)
def test_failure_restores_state(model, test_images, name, library):
    images, labels = test_images[0][:8], test_images[1][:8]
    failing = FailingModel(model, fail_at=2)
    modes = set_mixed_modes(failing)
    next(failing.parameters()).requires_grad_(False)
    requires_grad = [parameter.requires_grad for parameter in failing.parameters()]
    epsilon = 0.1 if ATTACKS[name].kind == "bounded" else None
    spec = make_spec(name, epsilon=epsilon, library=library)

    with pytest.raises(AttackError, match=f"{spec.label}.*forward failed on purpose") as excinfo:
        run_attack(failing, images, labels, spec)

    assert isinstance(excinfo.value.__cause__, RuntimeError)
    assert [module.training for module in failing.modules()] == modes
    assert [parameter.requires_grad for parameter in failing.parameters()] == requires_grad


@pytest.mark.parametrize(
    ("name", "library"),
    [
        ("cw", "torchattacks"),
        ("deepfool", "torchattacks"),
        ("pgd", "torchattacks"),
        ("cw", "foolbox"),
        ("deepfool", "foolbox"),
    ],
)
def test_parameter_grads_untouched(model, test_images, name, library):
    images, labels = test_images[0][:2], test_images[1][:2]
    parameters = list(model.parameters())
    parameters[0].grad = torch.full_like(parameters[0], 0.5)
    settings = {"steps": 3}
    if ATTACKS[name].kind == "bounded":
        settings["epsilon"] = 0.1
    if name == "cw" and library == "foolbox":
        settings["binary_search_steps"] = 1

    run_attack(model, images, labels, make_spec(name, library=library, **settings))

    assert torch.equal(parameters[0].grad, torch.full_like(parameters[0], 0.5))
    assert all(parameter.grad is None for parameter in parameters[1:])
    assert all(parameter.requires_grad for parameter in parameters)


# Determinism and inputs.


@pytest.mark.parametrize("library", ["torchattacks", "foolbox"])
def test_same_seed_same_result(model, test_images, library):
    images, labels = test_images[0][:SMOKE_IMAGES], test_images[1][:SMOKE_IMAGES]
    spec = make_spec("pgd", epsilon=0.1, steps=3, library=library)
    first = run_attack(model, images, labels, spec, seed=1)
    again = run_attack(model, images, labels, spec, seed=1)
    other = run_attack(model, images, labels, spec, seed=2)
    assert torch.equal(first.x_adv, again.x_adv)
    assert not torch.equal(first.x_adv, other.x_adv)


def test_square_seeded(model, test_images):
    images, labels = test_images[0][:8], test_images[1][:8]
    spec = make_spec("square", epsilon=0.1, queries=50)
    first = run_attack(model, images, labels, spec, seed=3)
    again = run_attack(model, images, labels, spec, seed=3)
    assert torch.equal(first.x_adv, again.x_adv)


def test_caller_generator_untouched(model, test_images):
    images, labels = test_images[0][:8], test_images[1][:8]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_attack(model, images, labels, make_spec("square", epsilon=0.1, queries=20), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_batches_cover_all_images(model, test_images):
    images, labels = test_images[0][:20], test_images[1][:20]
    spec = make_spec("bim", epsilon=0.3, steps=5, step_size=0.075)
    output = run_attack(model, images, labels, spec, batch_size=7)
    assert output.x_adv.shape == images.shape
    assert output.info["batch_size"] == 7
    assert accuracy(model, output.x_adv, labels) <= 0.15


def test_uint8_images_accepted(model):
    test = load_dataset("mnist-sample", "test", limit=8)
    spec = make_spec("fgsm", epsilon=0.1)
    from_uint8 = run_attack(model, test.images, test.labels, spec)
    from_float = run_attack(model, test.images.float() / 255.0, test.labels, spec)
    assert torch.equal(from_uint8.x_adv, from_float.x_adv)


@pytest.mark.parametrize(
    ("images", "labels", "error", "match"),
    [
        pytest.param(
            torch.full((2, 1, 28, 28), 2.0),
            torch.zeros(2, dtype=torch.long),
            ValueError,
            r"\[0, 1\]",
            id="range",
        ),
        pytest.param(
            torch.zeros(1, 28, 28),
            torch.zeros(1, dtype=torch.long),
            ValueError,
            r"\(N, C, H, W\)",
            id="3d",
        ),
        pytest.param(
            torch.zeros(0, 1, 28, 28),
            torch.zeros(0, dtype=torch.long),
            ValueError,
            "N >= 1",
            id="empty",
        ),
        pytest.param(
            torch.zeros(2, 1, 28, 28),
            torch.zeros(3, dtype=torch.long),
            ValueError,
            r"shape \(2,\)",
            id="labels",
        ),
        pytest.param(
            torch.zeros(2, 1, 28, 28), torch.zeros(2), TypeError, "integers", id="float-labels"
        ),
        pytest.param(
            torch.zeros(2, 1, 28, 28, dtype=torch.int32),
            torch.zeros(2, dtype=torch.long),
            TypeError,
            "uint8",
            id="int-images",
        ),
        pytest.param(
            torch.full((2, 1, 28, 28), math.nan),
            torch.zeros(2, dtype=torch.long),
            ValueError,
            "NaN",
            id="nan",
        ),
    ],
)
def test_run_attack_rejects_inputs(model, images, labels, error, match):
    with pytest.raises(error, match=match):
        run_attack(model, images, labels, make_spec("fgsm", epsilon=0.1))


def test_run_attack_rejects_spec_name(model, test_images):
    images, labels = test_images
    with pytest.raises(TypeError, match="AttackSpec from make_spec"):
        run_attack(model, images, labels, "fgsm")  # type: ignore[arg-type]


def test_run_attack_rejects_batch_size(model, test_images):
    images, labels = test_images
    with pytest.raises(ValueError, match="batch_size"):
        run_attack(model, images, labels, make_spec("fgsm", epsilon=0.1), batch_size=0)


def test_run_attack_rejects_other_device(model, test_images):
    images, labels = test_images
    with pytest.raises(ValueError, match="model is on cpu.*model.to"):
        run_attack(model, images, labels, make_spec("fgsm", epsilon=0.1), device="cuda:0")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("name", "library"), [("pgd", "torchattacks"), ("deepfool", "foolbox")])
def test_attack_on_cuda(model, test_images, name, library):
    images, labels = test_images[0][:8], test_images[1][:8]
    model = model.cuda()
    epsilon = 0.3 if ATTACKS[name].kind == "bounded" else None

    output = run_attack(model, images, labels, make_spec(name, epsilon=epsilon, library=library))

    assert output.x_adv.device.type == "cpu"
    assert output.info["device"].startswith("cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert accuracy(model.cpu(), output.x_adv, labels) <= 0.2


def test_perturbation_norms_values():
    x = torch.zeros(2, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.3
    x_adv[0, 0, 1, 1] = -0.4
    l2, linf = perturbation_norms(x, x_adv)
    assert l2.dtype == torch.float64
    assert l2.tolist() == pytest.approx([0.5, 0.0])
    assert linf.tolist() == pytest.approx([0.4, 0.0])


def test_perturbation_norms_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        perturbation_norms(torch.zeros(2, 3), torch.zeros(2, 4))


def test_import_is_lazy():
    code = (
        "import sys, robustdc.attacks; "
        "print(sorted(m for m in ('torchattacks', 'foolbox') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
