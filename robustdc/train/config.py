"""Training configuration: :class:`TrainConfig`, per-dataset defaults and validation.

A :class:`TrainConfig` contains every setting that determines the trained weights, so that
one config, one seed and one device reproduce one checkpoint. Build one with
:func:`default_config`, which fills in the defaults of the dataset, and override single
fields by keyword::

    config = default_config("cifar10", "tanhconv", training="fgsm", epochs=10)

Checkpoint names. ``config.name`` is ``<arch>-<model>-<angular>-<training>`` (the
baseline has no angular part: ``cnn9-baseline-natural``). When any other field except
``epochs`` differs from :func:`default_config` for the same dataset, architecture, model,
angular function and training kind, the name gets ``-`` and the first 8 hex digits of a
SHA-256 over all fields except ``epochs``: ``cnn9-tanhconv-cosine-natural-3f2a1c9b``.
So two configs that would train different weights never share a folder, and the
default model of each kind keeps a readable name. ``epochs`` is left out because the
first ``k`` epochs of a run do not depend on the planned total: a checkpoint trained for
``k`` epochs is continued, not replaced, when more epochs are requested. Loading still
compares the stored config with the requested one and raises on any difference, which
catches folders copied by hand and defaults changed between versions.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import numbers
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from robustdc.data import AUGMENTED_DATASETS, get_info
from robustdc.models import BASELINE, build_model, list_architectures, list_operators
from robustdc.models.validation import check_choice
from robustdc.ops import ANGULARS

#: Training kinds: plain, FGSM adversarial (half clean, half FGSM) and PGD adversarial.
TRAININGS: tuple[str, ...] = ("natural", "fgsm", "pgd")
ADVERSARIAL_TRAININGS: tuple[str, ...] = ("fgsm", "pgd")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")

#: Architecture used when ``default_config`` gets ``arch=None``.
DEFAULT_ARCH = "cnn9"

#: Length of the config hash that ``TrainConfig.name`` appends to non-default configs.
NAME_HASH_LENGTH = 8

# Seeds go to numpy's legacy generator, which accepts [0, 2**32).
_MAX_SEED = 2**32 - 1

# Per-dataset defaults of every field that default_config does not take as an argument.
# ``epsilon`` and the PGD fields apply only to the training kinds that use them.
#
# mnist-sample: the first command of a new user, `robustdc evaluate --model tanhconv`,
#   trains this model from scratch before attacking it, so it must train in seconds on a
#   CPU. CNN-9 at a quarter of the width (16/32/64 channels) with BatchNorm, one epoch
#   over the 10,000 sample training images in batches of 32, reached 96.2% to 96.6%
#   test accuracy on the 2,000 sample test images with seeds 0, 1 and 2 (timing in
#   docs/benchmarks.md). A second epoch adds about one point and doubles the time.
#   PGD training uses 10 steps to stay cheap, of 0.075 = 2.5 * epsilon / steps each, so
#   that the steps can cross the epsilon ball from any random start.
# mnist: the mnist-sample network with the lr divided by 10 after epoch 2 of 3. With
#   seed 0 it reached 99.43% test accuracy on the 10,000 MNIST test images in 231 s on a
#   2-core CPU (docs/benchmarks.md).
# fashion-mnist: CNN-9 at half width with BatchNorm, lr divided by 10 after epochs 6 and
#   8 of 10, because Fashion-MNIST is harder than MNIST. NOTE: not measured.
# Epsilon 0.3 (MNIST) and 0.1 (Fashion-MNIST) are the budgets most often used for these
#   datasets. PGD uses 40 steps of 0.01.
# cifar10, cifar100: full-width CNN-9 without BatchNorm and Adam, the network and
#   optimizer of the adversarial experiments of Liu et al. (2018), with the standard
#   pad-4 crop and flip augmentation; lr divided by 10 after epochs 30 and 40 of 50.
#   Epsilon 8/255 with 7 PGD steps of 2/255.
# NOTE: the PGD settings of mnist, fashion-mnist and cifar10 are those commonly quoted
#   from Madry et al. (2018) for MNIST and CIFAR-10; they were not checked against the
#   paper here.
_COMMON_DEFAULTS: dict[str, Any] = {
    "batch_size": 128,
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "weight_projection_every": 0,
    "orthogonal_penalty": 0.0,
    "weighted_gradients": False,
    "train_limit": None,
    "seed": 0,
}

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist-sample": {
        "epochs": 1,
        "batch_size": 32,
        "lr_milestones": (),
        "width": 0.25,
        "batch_norm": True,
        "augment": False,
        "epsilon": 0.3,
        "pgd_steps": 10,
        "pgd_step_size": 0.075,
    },
    "mnist": {
        "epochs": 3,
        "batch_size": 64,
        "lr_milestones": (2,),
        "width": 0.25,
        "batch_norm": True,
        "augment": False,
        "epsilon": 0.3,
        "pgd_steps": 40,
        "pgd_step_size": 0.01,
    },
    "fashion-mnist": {
        "epochs": 10,
        "lr_milestones": (6, 8),
        "width": 0.5,
        "batch_norm": True,
        "augment": False,
        "epsilon": 0.1,
        "pgd_steps": 40,
        "pgd_step_size": 0.01,
    },
    "cifar10": {
        "epochs": 50,
        "lr_milestones": (30, 40),
        "width": 1.0,
        "batch_norm": False,
        "augment": True,
        "epsilon": 8 / 255,
        "pgd_steps": 7,
        "pgd_step_size": 2 / 255,
    },
    "cifar100": {
        "epochs": 50,
        "lr_milestones": (30, 40),
        "width": 1.0,
        "batch_norm": False,
        "augment": True,
        "epsilon": 8 / 255,
        "pgd_steps": 7,
        "pgd_step_size": 2 / 255,
    },
}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every setting of one training run; see :func:`default_config` for the defaults.

    Attributes:
        dataset: dataset name, one of ``robustdc.data.DATASETS``.
        arch: architecture name, one of ``robustdc.models.list_architectures()``.
        model: command-line operator name: ``baseline`` or a decoupled operator such as
            ``tanhconv``.
        angular: angular function of the decoupled operators; ``cosine`` for the
            baseline.
        training: ``natural``, ``fgsm`` or ``pgd``. FGSM training replaces the second
            half of each batch by its FGSM examples. PGD training replaces the whole
            batch by its PGD examples, which start at a random point.
        epochs: number of passes over the training split, >= 1.
        batch_size: examples per optimizer step, >= 1.
        optimizer: ``adam`` or ``sgd`` (momentum 0.9).
        lr: initial learning rate, > 0.
        lr_milestones: epochs after which the learning rate is divided by 10, strictly
            increasing. Empty: divide by 10 when the training loss has not improved for
            more than two epochs (``ReduceLROnPlateau`` with patience 2).
        weight_decay: L2 weight decay of the optimizer, >= 0.
        epsilon: L-infinity budget of adversarial training in [0, 1] pixel units, in
            (0, 1]. ``None`` for natural training.
        pgd_steps: PGD steps per batch (``pgd`` training only, else ``None``).
        pgd_step_size: PGD step size in pixel units (``pgd`` training only, else
            ``None``).
        width: channel multiplier of the architecture, > 0.
        batch_norm: whether BatchNorm follows each conv.
        augment: random pad-4 crop and horizontal flip of training images (CIFAR only).
        weight_projection_every: rescale every decoupled kernel to norm 1 after every
            this many optimizer steps; 0 turns it off.
        orthogonal_penalty: strength of the orthogonality penalty of the decoupled
            kernels added to the loss; 0 turns it off.
        weighted_gradients: multiply the kernel gradients of unweighted decoupled
            layers by the kernel norm before each step.
        train_limit: train on the first this many training images; ``None`` uses the
            whole training split.
        seed: seed of every random generator, in [0, 2**32).
    """

    dataset: str
    arch: str
    model: str
    angular: str
    training: str
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    lr_milestones: tuple[int, ...]
    weight_decay: float
    epsilon: float | None
    pgd_steps: int | None
    pgd_step_size: float | None
    width: float
    batch_norm: bool
    augment: bool
    weight_projection_every: int
    orthogonal_penalty: float
    weighted_gradients: bool
    train_limit: int | None
    seed: int

    def __post_init__(self) -> None:
        for name, value in _validated_fields(self).items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-compatible dict (``lr_milestones`` as a list)."""
        values = dataclasses.asdict(self)
        values["lr_milestones"] = list(self.lr_milestones)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a config from :meth:`to_dict` output.

        Raises:
            ValueError: for a missing or unknown key, or an invalid value.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"expected a mapping of config fields, got {type(values).__name__}")
        fields = field_names()
        unknown = sorted(set(values) - set(fields))
        missing = [name for name in fields if name not in values]
        if unknown:
            raise ValueError(
                f"unknown TrainConfig field(s) {', '.join(map(repr, unknown))}; expected "
                f"only: {', '.join(fields)}"
            )
        if missing:
            raise ValueError(f"missing TrainConfig field(s): {', '.join(missing)}")
        return cls(**dict(values))

    def identity(self) -> dict[str, Any]:
        """Return the fields that select the checkpoint folder: all except ``epochs``."""
        values = self.to_dict()
        del values["epochs"]
        return values

    @property
    def name(self) -> str:
        """Filesystem-safe checkpoint folder name; see the module docstring."""
        parts = [self.arch, self.model]
        if self.model != BASELINE:
            parts.append(self.angular)
        parts.append(self.training)
        base = "-".join(parts)

        reference = default_config(
            self.dataset,
            self.model,
            angular=self.angular,
            arch=self.arch,
            training=self.training,
        )
        if self.identity() == reference.identity():
            return base
        return f"{base}-{self.identity_hash()}"

    def identity_hash(self) -> str:
        """Return the first hex digits of a SHA-256 over :meth:`identity`."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:NAME_HASH_LENGTH]


def field_names() -> list[str]:
    """Return the :class:`TrainConfig` field names in declaration order."""
    return [field.name for field in dataclasses.fields(TrainConfig)]


def default_config(
    dataset: str,
    model: str,
    *,
    angular: str = "cosine",
    arch: str | None = None,
    training: str = "natural",
    **overrides: Any,
) -> TrainConfig:
    """Return the default :class:`TrainConfig` of ``dataset``, with ``overrides`` applied.

    The defaults per dataset are in :data:`DATASET_DEFAULTS`, with the reasons in this
    module's source. ``epsilon`` and the PGD fields are set only for the training kinds
    that use them.

    Args:
        dataset: dataset name, one of ``robustdc.data.DATASETS``.
        model: operator name, one of ``robustdc.models.list_operators()``.
        angular: angular function of the decoupled operators.
        arch: architecture name; ``None`` means ``cnn9``.
        training: ``natural``, ``fgsm`` or ``pgd``.
        **overrides: values of further :class:`TrainConfig` fields.

    Raises:
        ValueError: for an unknown name or field, or an invalid value.
    """
    get_info(dataset)
    check_choice("training kind", training, TRAININGS)
    for reserved in ("dataset", "model", "angular", "arch", "training"):
        if reserved in overrides:
            raise ValueError(f"pass {reserved} as its own argument, not among the overrides")
    unknown = [name for name in overrides if name not in field_names()]
    if unknown:
        raise ValueError(_unknown_field_message(unknown[0]))

    if dataset not in DATASET_DEFAULTS:
        raise ValueError(
            f"dataset {dataset!r} has no training defaults; expected one of: "
            f"{', '.join(DATASET_DEFAULTS)}"
        )
    values: dict[str, Any] = {**_COMMON_DEFAULTS, **DATASET_DEFAULTS[dataset]}
    if training not in ADVERSARIAL_TRAININGS:
        values["epsilon"] = None
    if training != "pgd":
        values["pgd_steps"] = None
        values["pgd_step_size"] = None
    values.update(overrides)
    return TrainConfig(
        dataset=dataset,
        arch=DEFAULT_ARCH if arch is None else arch,
        model=model,
        angular=angular,
        training=training,
        **values,
    )


def train_command(config: TrainConfig) -> str:
    """Return the ``robustdc train`` command line that trains ``config``.

    Options are given only where they differ from the defaults. Fields that the command
    line does not expose are listed after the command when they are not the defaults.
    """
    reference = default_config(
        config.dataset,
        config.model,
        angular=config.angular,
        arch=config.arch,
        training=config.training,
    )
    words = ["robustdc", "train", "--model", config.model, "--dataset", config.dataset]
    if config.arch != DEFAULT_ARCH:
        words += ["--arch", config.arch]
    if config.angular != "cosine":
        words += ["--angular", config.angular]
    if config.training != "natural":
        words += ["--adversarial", config.training]
    words += ["--epochs", str(config.epochs)]

    options = {
        "epsilon": "--epsilon",
        "pgd_steps": "--pgd-steps",
        "pgd_step_size": "--pgd-step-size",
        "batch_size": "--batch-size",
        "optimizer": "--optimizer",
        "lr": "--lr",
        "width": "--width",
        "train_limit": "--limit",
        "seed": "--seed",
    }
    for field, option in options.items():
        value = getattr(config, field)
        if value != getattr(reference, field):
            words += [option, str(value)]
    if config.batch_norm != reference.batch_norm:
        words.append("--batch-norm" if config.batch_norm else "--no-batch-norm")
    if config.lr_milestones != reference.lr_milestones:
        words += ["--lr-milestones", ",".join(map(str, config.lr_milestones)) or "none"]

    command = shlex.join(words)
    exposed = {"dataset", "arch", "model", "angular", "training", "epochs", "batch_norm"}
    exposed |= {"lr_milestones", *options}
    hidden = [
        f"{field}={getattr(config, field)!r}"
        for field in field_names()
        if field not in exposed and getattr(config, field) != getattr(reference, field)
    ]
    if hidden:
        command += f" (and, through robustdc.train.train(), {', '.join(hidden)})"
    return command


def _unknown_field_message(name: str) -> str:
    message = f"unknown TrainConfig field {name!r}; expected one of: {', '.join(field_names())}"
    close = difflib.get_close_matches(name, field_names(), n=1)
    if close:
        message += f". Did you mean {close[0]!r}?"
    return message


def _validated_fields(config: TrainConfig) -> dict[str, Any]:
    """Check every field of ``config`` and return the fields in canonical types."""
    get_info(config.dataset)
    values: dict[str, Any] = {
        "arch": check_choice("architecture", config.arch, list_architectures()),
        "model": check_choice("model", config.model, list_operators()),
        "angular": check_choice("angular function", config.angular, ANGULARS),
        "training": check_choice("training kind", config.training, TRAININGS),
        "optimizer": check_choice("optimizer", config.optimizer, OPTIMIZERS),
    }
    if values["model"] == BASELINE and values["angular"] != "cosine":
        raise ValueError(
            f"angular function {config.angular!r} needs a decoupled operator; the baseline "
            "model (nn.Conv2d) has the cosine angular function only"
        )

    values["epochs"] = _integer("epochs", config.epochs, minimum=1)
    values["batch_size"] = _integer("batch_size", config.batch_size, minimum=1)
    values["lr"] = _number("lr", config.lr, above=0.0)
    values["lr_milestones"] = _milestones(config.lr_milestones)
    values["weight_decay"] = _number("weight_decay", config.weight_decay, at_least=0.0)
    values["width"] = _number("width", config.width, above=0.0)
    values["batch_norm"] = _boolean("batch_norm", config.batch_norm)
    values["augment"] = _boolean("augment", config.augment)
    values["weight_projection_every"] = _integer(
        "weight_projection_every", config.weight_projection_every, minimum=0
    )
    values["orthogonal_penalty"] = _number(
        "orthogonal_penalty", config.orthogonal_penalty, at_least=0.0
    )
    values["weighted_gradients"] = _boolean("weighted_gradients", config.weighted_gradients)
    values["train_limit"] = (
        None
        if config.train_limit is None
        else _integer("train_limit", config.train_limit, minimum=1)
    )
    values["seed"] = _integer("seed", config.seed, minimum=0, maximum=_MAX_SEED)

    if values["augment"] and config.dataset not in AUGMENTED_DATASETS:
        raise ValueError(
            f"augment=True is defined only for {', '.join(AUGMENTED_DATASETS)}, got "
            f"dataset {config.dataset!r}"
        )
    values.update(_adversarial_fields(config, values["training"]))
    return values


def _adversarial_fields(config: TrainConfig, training: str) -> dict[str, Any]:
    """Check ``epsilon`` and the PGD fields against the training kind."""
    values: dict[str, Any] = {}
    if training in ADVERSARIAL_TRAININGS:
        if config.epsilon is None:
            raise ValueError(f"{training} training needs epsilon in (0, 1], got None")
        values["epsilon"] = _epsilon("epsilon", config.epsilon)
    elif config.epsilon is not None:
        raise ValueError(
            f"epsilon is used only by adversarial training (fgsm or pgd), got "
            f"epsilon={config.epsilon!r} with training={training!r}; leave it None"
        )
    else:
        values["epsilon"] = None

    if training == "pgd":
        if config.pgd_steps is None or config.pgd_step_size is None:
            raise ValueError("pgd training needs pgd_steps and pgd_step_size, got None")
        values["pgd_steps"] = _integer("pgd_steps", config.pgd_steps, minimum=1)
        values["pgd_step_size"] = _epsilon("pgd_step_size", config.pgd_step_size)
    else:
        for name in ("pgd_steps", "pgd_step_size"):
            if getattr(config, name) is not None:
                raise ValueError(
                    f"{name} is used only by pgd training, got {name}="
                    f"{getattr(config, name)!r} with training={training!r}; leave it None"
                )
            values[name] = None
    return values


def _integer(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _number(
    name: str, value: object, *, above: float | None = None, at_least: float | None = None
) -> float:
    bound = f"> {above:g}" if above is not None else f">= {at_least:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    number = float(value)
    too_small = (above is not None and number <= above) or (
        at_least is not None and number < at_least
    )
    if not math.isfinite(number) or too_small:
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


def _epsilon(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not 0 < number <= 1:
        raise ValueError(
            f"{name} must be in (0, 1] (pixel units of images scaled to [0, 1]), got {value!r}"
        )
    return number


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _milestones(value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"lr_milestones must be a list of epochs, got {value!r}")
    milestones = tuple(_integer("each lr milestone", item, minimum=1) for item in value)
    if any(later <= earlier for earlier, later in itertools.pairwise(milestones)):
        raise ValueError(f"lr_milestones must be strictly increasing, got {list(milestones)}")
    return milestones


def build_model_from_config(config: TrainConfig) -> nn.Module:
    """Build the untrained model of ``config``, with the dataset's statistics and sizes."""
    info = get_info(config.dataset)
    return build_model(
        config.arch,
        config.model,
        angular=config.angular,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        width=config.width,
        batch_norm=config.batch_norm,
        mean=info.mean,
        std=info.std,
    )
