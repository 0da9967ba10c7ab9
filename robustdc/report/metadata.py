"""Run metadata for the report: versions, seeds, threat model, dates and command lines.

Everything comes from the result rows, the checkpoint folders and the running Python,
so the report states only what was recorded. Columns that a table lacks show as ``-``.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import pandas as pd

from robustdc.plots.series import attack_sort_key, attack_title
from robustdc.report.checkpoints import CheckpointSummary
from robustdc.report.tables import MISSING, format_number, format_percent

#: Packages whose installed versions the report lists for the process that wrote it.
REPORT_PACKAGES: tuple[str, ...] = ("robustdc", "pandas", "matplotlib", "jinja2", "numpy")

# Entries of the ``spec`` part of ``attack_settings`` that vary per row or repeat other
# columns, so the threat-model table leaves them out.
_SPEC_SKIPPED = ("epsilon", "label", "name", "norm", "kind")


@dataclass(frozen=True)
class Item:
    """One name-value line of a metadata list."""

    name: str
    value: str


@dataclass(frozen=True)
class ThreatModel:
    """The settings of one attack and norm across the report's rows.

    Attributes:
        attack: e.g. ``BIM (Linf)``.
        kinds: evaluation kinds, e.g. ``white-box, transfer``.
        epsilons: the budgets, or ``-`` for minimum-norm attacks.
        library: attack library and version, e.g. ``torchattacks 3.5.1``.
        settings: ``name: value`` of every recorded spec setting; a setting with
            several values lists them all.
    """

    attack: str
    kinds: str
    epsilons: str
    library: str
    settings: list[str]


def utc_now() -> str:
    """Return the current UTC time as ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def report_items(command_line: str | None, generated: str) -> list[Item]:
    """Describe the process that writes the report: time, command line and versions."""
    items = [
        Item("generated (UTC)", generated),
        Item("command line", command_line or "(called from Python, no command line)"),
        Item("Python", f"{platform.python_version()} on {platform.platform(terse=True)}"),
    ]
    for package in REPORT_PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "not installed"
        items.append(Item(package, version))
    return items


def results_items(frame: pd.DataFrame, results_path: str) -> list[Item]:
    """Describe the evaluated rows: where they come from, when, with which versions and seeds."""
    created = sorted(str(value) for value in frame["created"] if str(value))
    dates = MISSING
    if created:
        dates = created[0] if created[0] == created[-1] else f"{created[0]} to {created[-1]}"
    libraries = sorted(
        {
            f"{library} {version}".strip()
            for library, version in zip(frame["library"], frame["library_version"], strict=True)
            if str(library)
        }
    )
    return [
        Item("results file", results_path),
        Item("result rows in this report", str(len(frame))),
        Item("evaluated (UTC)", dates),
        Item("evaluation seeds", _distinct(frame["seed"])),
        Item("robustdc version of the rows", _distinct(frame["robustdc_version"])),
        Item("torch version of the rows", _distinct(frame["torch_version"])),
        Item("attack libraries", ", ".join(libraries) or MISSING),
        Item("test examples per row", _distinct(frame["n_examples"])),
        Item(
            "evaluate command lines",
            "not stored in the results table; each attack's recorded settings are in the "
            "threat-model table below",
        ),
    ]


def threat_models(frame: pd.DataFrame) -> list[ThreatModel]:
    """Summarize every attack and norm of ``frame`` with its budgets and settings."""
    pairs = sorted(
        {(attack, norm) for attack, norm in zip(frame["attack"], frame["norm"], strict=True)},
        key=lambda pair: (attack_sort_key(pair[0]), pair[1]),
    )
    models = []
    for attack, norm in pairs:
        rows = frame[(frame["attack"] == attack) & (frame["norm"] == norm)]
        epsilons = sorted({float(value) for value in rows["epsilon"] if pd.notna(value)})
        libraries = sorted(
            {
                f"{library} {version}".strip()
                for library, version in zip(rows["library"], rows["library_version"], strict=True)
                if str(library)
            }
        )
        models.append(
            ThreatModel(
                attack=attack_title(attack, norm),
                kinds=", ".join(sorted(set(rows["kind"]))),
                epsilons=", ".join(format_number(value, 4) for value in epsilons) or MISSING,
                library=", ".join(libraries) or MISSING,
                settings=_spec_settings(rows["attack_settings"]),
            )
        )
    return models


def checkpoint_items(summary: CheckpointSummary) -> list[Item]:
    """Describe one checkpoint: folder, epochs, seed, date, accuracy and train command."""
    if summary.problem:
        return [Item("checkpoint", summary.name or MISSING), Item("not read", summary.problem)]
    accuracy = MISSING if summary.test_accuracy is None else format_percent(summary.test_accuracy)
    return [
        Item("checkpoint", str(summary.folder)),
        Item("epochs", str(summary.epochs)),
        Item("training seed", str(summary.seed)),
        Item("training started (UTC)", summary.created or MISSING),
        Item("test accuracy (whole test split)", accuracy),
        Item("command line", summary.command),
    ]


def _spec_settings(texts: pd.Series) -> list[str]:
    values: dict[str, set[str]] = {}
    for text in texts:
        spec = _load_spec(text)
        for name, value in spec.items():
            if name in _SPEC_SKIPPED:
                continue
            rendered = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            values.setdefault(name, set()).add(rendered)
    return [f"{name}: {', '.join(sorted(found))}" for name, found in sorted(values.items())]


def _load_spec(text: Any) -> dict[str, Any]:
    try:
        settings = json.loads(text) if isinstance(text, str) and text else {}
    except json.JSONDecodeError:
        return {}
    spec = settings.get("spec") if isinstance(settings, dict) else None
    return spec if isinstance(spec, dict) else {}


def _distinct(values: pd.Series) -> str:
    found = {str(value) for value in values if pd.notna(value) and str(value)}
    return ", ".join(sorted(found, key=_natural_key)) or MISSING


def _natural_key(text: str) -> tuple[int, float, str]:
    # Numbers in numeric order first, then text.
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)
