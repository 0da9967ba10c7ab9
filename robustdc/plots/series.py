"""Grouping result rows into one plotted series per evaluated model."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

#: Columns that identify one evaluated model in the results table.
MODEL_COLUMNS: tuple[str, ...] = (
    "dataset",
    "arch",
    "model",
    "angular",
    "training",
    "checkpoint",
    "seed",
)

#: Attacks in the order in which panels and table columns show them; others follow
#: alphabetically.
ATTACK_ORDER: tuple[str, ...] = ("fgsm", "bim", "pgd", "cw", "square", "autoattack", "deepfool")

#: Display names of norms and attacks in plots and the report.
NORM_LABELS = {"linf": "Linf", "l2": "L2"}
ATTACK_LABELS = {
    "fgsm": "FGSM",
    "bim": "BIM",
    "pgd": "PGD",
    "cw": "CW",
    "square": "Square",
    "autoattack": "AutoAttack",
    "deepfool": "DeepFool",
}


def attack_sort_key(attack: str) -> tuple[int, str]:
    """Return a sort key that puts known attacks in :data:`ATTACK_ORDER` first."""
    if attack in ATTACK_ORDER:
        return (ATTACK_ORDER.index(attack), attack)
    return (len(ATTACK_ORDER), attack)


def attack_title(attack: str, norm: str) -> str:
    """Format an attack and its norm as ``FGSM (Linf)``."""
    return f"{ATTACK_LABELS.get(attack, attack)} ({NORM_LABELS.get(norm, norm)})"


def model_series(frame: pd.DataFrame, extra: Sequence[str] = ()) -> list[tuple[str, pd.DataFrame]]:
    """Split ``frame`` into one group of rows per model and return ``(label, rows)`` pairs.

    A model is one combination of :data:`MODEL_COLUMNS` plus the ``extra`` columns (for
    example ``source`` for transfer rows). Columns missing from ``frame`` are ignored.
    The label is the model name, followed by every other identifying column that takes
    several values for one model name, so ``tanhconv (training=fgsm)`` appears only when
    tanhconv has rows of both trainings. Groups come baseline first, then sorted by label.
    """
    columns = [name for name in (*MODEL_COLUMNS, *extra) if name in frame.columns]
    if frame.empty or "model" not in columns:
        return []
    per_model = frame.groupby("model")
    varying = [name for name in columns if name != "model" and per_model[name].nunique().max() > 1]
    groups: list[tuple[bool, str, pd.DataFrame]] = []
    for values, rows in frame.groupby(columns, sort=False, dropna=False):
        identity = dict(zip(columns, values, strict=True))
        qualifiers = [f"{name}={identity[name]}" for name in varying]
        label = str(identity["model"])
        if qualifiers:
            label += f" ({', '.join(qualifiers)})"
        groups.append((identity["model"] != "baseline", label, rows))
    groups.sort(key=lambda group: group[:2])
    return [(label, rows) for _, label, rows in groups]
