"""The column schema of the results table, kept in one place.

One row is one evaluation: a model (``dataset``, ``arch``, ``model``, ``training``)
attacked once (``attack``, ``norm``, ``epsilon``, ``kind``, ``source``, ``seed``).
Those ten columns are the key: a results file contains at most one row per key.

Column kinds and their pandas dtypes:

- ``str``: text, ``""`` when not applicable; dtype ``str`` (pandas 3) or ``object``
  (pandas 2).
- ``json``: JSON text; dicts and lists passed to ``append`` are serialized.
- ``float``: ``float64``, NaN when not measured.
- ``int``: ``int64``, always present.
- ``count``: nullable ``Int64``, ``<NA>`` when not measured.

To add a column, append a :class:`Column` to :data:`COLUMNS`. Files written before
the change still load; the new column is filled with its missing value.
"""

from __future__ import annotations

from dataclasses import dataclass

COLUMN_KINDS: tuple[str, ...] = ("str", "json", "float", "int", "count")

#: Values of the ``kind`` column.
EVALUATION_KINDS: tuple[str, ...] = ("white-box", "transfer", "minimum-norm")


@dataclass(frozen=True)
class Column:
    """One column of the results table.

    Attributes:
        name: column name.
        kind: one of :data:`COLUMN_KINDS`.
        description: meaning and unit.
        key: whether the column is part of the row key.
        default: text stored when a ``str`` or ``json`` value is missing.
    """

    name: str
    kind: str
    description: str
    key: bool = False
    default: str = ""


def _norm_columns(norm: str) -> tuple[Column, ...]:
    unit = "pixel units in [0, 1]"
    return (
        Column(f"{norm}_median", "float", f"median {norm} norm of x_adv - x, {unit}"),
        Column(f"{norm}_mean", "float", f"mean {norm} norm of x_adv - x, {unit}"),
        Column(f"{norm}_p10", "float", f"10th percentile of the {norm} norms"),
        Column(f"{norm}_p90", "float", f"90th percentile of the {norm} norms"),
    )


COLUMNS: tuple[Column, ...] = (
    # Key.
    Column("dataset", "str", "dataset name, e.g. cifar10", key=True),
    Column("arch", "str", "architecture, e.g. cnn9", key=True),
    Column("model", "str", "operator model name, e.g. tanhconv", key=True),
    Column("angular", "str", "angular function of the operator, e.g. cosine", key=True),
    Column("training", "str", "natural, fgsm or pgd", key=True),
    Column("attack", "str", "attack name, e.g. bim", key=True),
    Column("norm", "str", "linf or l2", key=True),
    Column("epsilon", "float", "attack budget; NaN for minimum-norm attacks", key=True),
    Column("kind", "str", "white-box, transfer or minimum-norm", key=True),
    Column("source", "str", "model that crafted transfer examples; '' otherwise", key=True),
    Column("seed", "int", "random seed of the evaluation", key=True),
    # Accuracy.
    Column("clean_accuracy", "float", "fraction of examples classified correctly"),
    Column("robust_accuracy", "float", "fraction still correct on x_adv"),
    Column("attack_success_rate", "float", "fraction of clean-correct examples fooled"),
    Column("n_examples", "count", "examples evaluated"),
    Column("n_clean_correct", "count", "examples classified correctly without attack"),
    # Perturbation norms.
    *_norm_columns("l2"),
    *_norm_columns("linf"),
    Column("n_not_fooled", "count", "DeepFool: clean-correct examples it could not flip"),
    # Provenance.
    # Key as well: two checkpoints of one operator (another seed, width or epoch count)
    # must not share rows.
    Column("checkpoint", "str", "name of the evaluated model's checkpoint folder", key=True),
    Column("seconds", "float", "wall-clock seconds of the attack"),
    Column("library", "str", "torchattacks or foolbox"),
    Column("library_version", "str", "version of the attack library"),
    Column("attack_settings", "json", "every setting of the attack", default="{}"),
    Column("robustdc_version", "str", "robustdc version that wrote the row"),
    Column("torch_version", "str", "torch version that wrote the row"),
    Column("created", "str", "UTC time the row was written, ISO 8601"),
    Column("warnings", "json", "sanity-check warnings, a JSON list", default="[]"),
    # Sanity checks; NaN when not measured.
    Column("fgsm_robust_accuracy", "float", "robust accuracy under FGSM, same epsilon"),
    Column(
        "bim_robust_accuracy",
        "float",
        "robust accuracy under 10-step BIM, same epsilon and examples (Linf PGD, AutoAttack)",
    ),
    Column(
        "large_epsilon_robust_accuracy",
        "float",
        "robust accuracy at a very large epsilon; should be near 0",
    ),
    Column(
        "zero_gradient_fraction",
        "float",
        "fraction of examples whose input gradient is exactly zero",
    ),
    Column("deepfool_success_rate", "float", "fraction of clean-correct examples DeepFool flips"),
    Column(
        "transfer_robust_accuracy",
        "float",
        "robust accuracy under transfer examples at the same epsilon",
    ),
)

COLUMNS_BY_NAME: dict[str, Column] = {column.name: column for column in COLUMNS}
COLUMN_NAMES: tuple[str, ...] = tuple(COLUMNS_BY_NAME)
KEY_COLUMNS: tuple[str, ...] = tuple(column.name for column in COLUMNS if column.key)


def pandas_dtype(kind: str) -> str:
    """Return the pandas dtype name of a column kind; ``str`` means the default string dtype."""
    return {
        "str": "str",
        "json": "str",
        "float": "float64",
        "int": "int64",
        "count": "Int64",
    }[kind]


#: pandas dtype of every schema column.
DTYPES: dict[str, str] = {column.name: pandas_dtype(column.kind) for column in COLUMNS}
