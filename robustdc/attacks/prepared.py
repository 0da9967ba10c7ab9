"""The contract between :func:`~robustdc.attacks.run_attack` and the library adapters.

Each adapter module (``torchattacks_adapter``, ``foolbox_adapter``) has a function
``prepare(model, spec, *, num_classes, device, seed) -> PreparedAttack`` that builds
the library's attack object once. :func:`~robustdc.attacks.run_attack` then calls
:attr:`PreparedAttack.run_batch` on every batch, with the model already in eval mode
and its parameters frozen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

BatchResult = tuple[torch.Tensor, torch.Tensor | None]


@dataclass
class PreparedAttack:
    """A library attack object bound to one model and one :class:`AttackSpec`.

    Attributes:
        run_batch: ``run_batch(x, labels)`` takes images (B, C, H, W) in [0, 1] and
            int64 labels (B,) on the model's device. It returns ``x_adv`` of the same
            shape and the library's own per-sample success flags (B,), or ``None``
            when the library reports none.
        info: JSON-serializable description: ``library``, ``library_version``,
            ``class`` (qualified class name), ``settings`` (every setting of the
            library object) and, for composite attacks, ``components`` (one
            ``{"class", "settings"}`` entry per sub-attack).
    """

    run_batch: Callable[[torch.Tensor, torch.Tensor], BatchResult]
    info: dict[str, Any]


def qualified_name(obj: object) -> str:
    """Return ``module.Class`` of ``obj``'s type, e.g. ``torchattacks.attacks.pgd.PGD``."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# Attributes of torchattacks attack objects that are state or plumbing, not settings.
_NOT_SETTINGS = frozenset({"model", "model_name", "attack", "device", "supported_mode"})


def library_settings(attack: object) -> dict[str, Any]:
    """Return the public scalar attributes of a library attack object.

    Reading the settings back from the object records the library defaults that the
    adapter did not pass, e.g. ``p_init`` of torchattacks' Square. Non-finite floats
    become strings so that the result stays valid JSON.
    """
    settings: dict[str, Any] = {}
    for name, value in sorted(vars(attack).items()):
        if name.startswith("_") or name in _NOT_SETTINGS:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            settings[name] = str(value)
        elif value is None or isinstance(value, (bool, int, float, str)):
            settings[name] = value
    return settings


def describe(attack: object) -> dict[str, Any]:
    """Return ``{"class": ..., "settings": ...}`` for one library attack object."""
    return {"class": qualified_name(attack), "settings": library_settings(attack)}
