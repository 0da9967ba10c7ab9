"""Per-sample attack results that the ranks of a torchrun launch compute and gather.

Under torchrun the harness gives each rank a contiguous run of whole attack batches
(:func:`robustdc.distributed.shard_range` with the request's batch size). Each rank
attacks and classifies exactly the batches that one process would, with the same
per-batch seed, so the gathered per-sample results equal those of one process bit for
bit (on the same device type and thread count). Everything in a result row is then
computed from the gathered results on every rank, and rank 0 writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class AttackedExamples:
    """Per-sample results of one attack on a run of examples, on the CPU.

    Attributes:
        adversarial_correct: bool (N,), whether the target classifies ``x_adv``
            correctly.
        l2: float64 (N,) L2 norms of ``x_adv - x``.
        linf: float64 (N,) Linf norms of ``x_adv - x``.
        success: bool (N,) per-sample success as the library reported it, or None.
        info: the attack's JSON-serializable record (see
            :class:`robustdc.attacks.AttackOutput`).
        seconds: wall-clock time of the attack.
    """

    adversarial_correct: Tensor
    l2: Tensor
    linf: Tensor
    success: Tensor | None
    info: dict[str, Any]
    seconds: float


def merge_shards(shards: Sequence[AttackedExamples | None]) -> AttackedExamples:
    """Concatenate the results of the ranks, in rank order, into one run of examples.

    ``None`` stands for a rank without examples. The record is rank 0's, with
    ``n_examples`` and ``n_library_success`` summed over the ranks, so it matches the
    record of one process. ``seconds`` is the longest rank's time, the wall-clock time
    of the attack.

    Raises:
        ValueError: no rank has examples.
    """
    parts = [shard for shard in shards if shard is not None]
    if not parts:
        raise ValueError("no rank has examples to merge")
    if len(parts) == 1:
        return parts[0]

    info = dict(parts[0].info)
    if "n_examples" in info:
        info["n_examples"] = sum(int(part.info["n_examples"]) for part in parts)
    if "n_library_success" in info:
        counts = [part.info.get("n_library_success") for part in parts]
        info["n_library_success"] = None if None in counts else sum(counts)

    successes = [part.success for part in parts if part.success is not None]
    success = torch.cat(successes) if len(successes) == len(parts) else None
    return AttackedExamples(
        adversarial_correct=torch.cat([part.adversarial_correct for part in parts]),
        l2=torch.cat([part.l2 for part in parts]),
        linf=torch.cat([part.linf for part in parts]),
        success=success,
        info=info,
        seconds=max(part.seconds for part in parts),
    )
