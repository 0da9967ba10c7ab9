"""Seeded synthetic results for the plot and report tests: a workdir with several models.

The rows follow the results schema, the per-sample norms go through the results store,
and each model gets a checkpoint folder with ``config.json`` and ``metrics.csv`` written
by robustdc's own checkpoint writers (no weights: plots and reports never load them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustdc.results import ResultsStore
from robustdc.train import default_config
from robustdc.train.checkpoint import checkpoint_dir, write_config, write_metrics

DATASET = "mnist-sample"
MODELS = ("baseline", "sphereconv", "tanhconv")
FGSM_EPSILONS = (0.05, 0.1, 0.2, 0.3)
N_EXAMPLES = 200


def key(model: str, attack: str, norm: str, epsilon: float | None, kind: str) -> dict[str, Any]:
    """Return the key columns of one synthetic row."""
    config = default_config(DATASET, model)
    return {
        "dataset": DATASET,
        "arch": config.arch,
        "model": model,
        "angular": config.angular,
        "training": "natural",
        "attack": attack,
        "norm": norm,
        "epsilon": epsilon,
        "kind": kind,
        "source": "baseline" if kind == "transfer" else "",
        "seed": 0,
        "checkpoint": config.name,
    }


def synthetic_rows(models: tuple[str, ...] = MODELS, seed: int = 0) -> list[dict[str, Any]]:
    """Return white-box and transfer FGSM/BIM rows and DeepFool rows for ``models``."""
    rng = np.random.default_rng(seed)
    rows = []
    for index, model in enumerate(models):
        clean = 0.97 + 0.005 * index
        common = {"clean_accuracy": clean, "n_examples": N_EXAMPLES, "warnings": "[]"}
        common |= {"library": "torchattacks", "library_version": "3.5.1"}
        common |= {"robustdc_version": "0.1.0", "torch_version": "2.14.1"}
        common |= {"large_epsilon_robust_accuracy": 0.0, "zero_gradient_fraction": 0.0}
        for epsilon in FGSM_EPSILONS:
            robust = max(0.0, clean - epsilon * (2.5 - 0.4 * index) + rng.uniform(0, 0.02))
            rows.append(
                {
                    **key(model, "fgsm", "linf", epsilon, "white-box"),
                    **common,
                    "robust_accuracy": robust,
                    "attack_success_rate": 1 - robust / clean,
                    "attack_settings": json.dumps({"spec": {"steps": 1, "epsilon": epsilon}}),
                }
            )
            if model != "baseline":
                rows.append(
                    {
                        **key(model, "fgsm", "linf", epsilon, "transfer"),
                        **common,
                        "robust_accuracy": min(clean, robust + 0.2),
                    }
                )
        rows.append(
            {
                **key(model, "bim", "linf", 0.3, "white-box"),
                **common,
                "robust_accuracy": 0.01 * index,
                "attack_settings": json.dumps({"spec": {"steps": 10, "step_size": 0.0375}}),
            }
        )
        for norm in ("l2", "linf"):
            rows.append(
                {
                    **key(model, "deepfool", norm, None, "minimum-norm"),
                    **common,
                    "robust_accuracy": 0.0,
                    "attack_success_rate": 1.0,
                    f"{norm}_median": 1.0 + index if norm == "l2" else 0.1 + 0.02 * index,
                    "n_not_fooled": 0,
                }
            )
    return rows


def write_workdir(
    workdir: Path, models: tuple[str, ...] = MODELS, rows: list[dict[str, Any]] | None = None
) -> ResultsStore:
    """Write results, per-sample DeepFool norms and checkpoint metadata into ``workdir``."""
    store = ResultsStore(workdir)
    rows = synthetic_rows(models) if rows is None else rows
    store.append(rows)
    rng = np.random.default_rng(1)
    for row in rows:
        if row["kind"] != "minimum-norm":
            continue
        scale = 1.0 + models.index(row["model"]) if row["model"] in models else 1.0
        l2 = rng.gamma(4.0, 0.3 * scale, size=N_EXAMPLES)
        fooled = rng.uniform(size=N_EXAMPLES) < 0.97
        store.save_sample_norms(row, l2=l2, linf=l2 / 12, fooled=fooled)
    for model in models:
        write_checkpoint_metadata(workdir, model)
    return store


def write_checkpoint_metadata(workdir: Path, model: str, epochs: int = 3) -> Path:
    """Write ``config.json`` and ``metrics.csv`` of a ``model`` checkpoint, without weights."""
    config = default_config(DATASET, model, epochs=epochs)
    folder = checkpoint_dir(workdir, config)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = [
        {
            "epoch": epoch,
            "loss": 0.6 / epoch,
            "train_accuracy": 0.9 + 0.02 * epoch,
            "test_accuracy": 0.91 + 0.02 * epoch,
            "lr": 1e-3,
            "seconds": 10.0,
        }
        for epoch in range(1, epochs + 1)
    ]
    write_metrics(folder, metrics)
    write_config(
        folder,
        config,
        epochs_completed=epochs,
        created="2026-01-01T00:00:00+00:00",
        test_accuracy=metrics[-1]["test_accuracy"],
    )
    return folder


def metrics_frame(epochs: int = 3) -> pd.DataFrame:
    """Return per-epoch training metrics like those of a checkpoint's ``metrics.csv``."""
    return pd.DataFrame(
        {
            "epoch": list(range(1, epochs + 1)),
            "loss": [0.6 / epoch for epoch in range(1, epochs + 1)],
            "train_accuracy": [0.9 + 0.02 * epoch for epoch in range(1, epochs + 1)],
            "test_accuracy": [0.91 + 0.02 * epoch for epoch in range(1, epochs + 1)],
        }
    )
