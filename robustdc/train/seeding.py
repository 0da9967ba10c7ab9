"""Seeding and saving the state of every random generator that training uses.

Training draws random numbers from Python's ``random``, numpy's global generator,
torch's global CPU generator (weight initialization, PGD random starts, augmentation),
the CUDA generators, and the generator that shuffles the training set. Saving and
restoring all of them lets a resumed run continue exactly where it stopped.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    """Return the state of every generator, as tensors and plain Python values.

    The result loads with ``torch.load(weights_only=True)``: numpy's key array is
    stored as a tensor instead of an ndarray.
    """
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss = random.getstate()
    return {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": loader_generator.get_state(),
    }


def restore_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    """Restore generator states captured by :func:`capture_rng_state`.

    Raises:
        KeyError, TypeError, ValueError, RuntimeError: ``state`` is not in the format
            of :func:`capture_rng_state`.
    """
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy["keys"].cpu().numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state["cuda"]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in cuda_states])
    loader_generator.set_state(state["loader"].cpu())
