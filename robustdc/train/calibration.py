"""Recompute running statistics with the final weights after training.

Eval mode uses running statistics: BatchNorm's mean and variance and the running mean
patch norm of decoupled layers with an adaptive radius. During training they average
over batches computed with older weights. The decoupled running norm in particular
averages over the whole run (momentum 0.001, the paper's decay 0.999), so after a short
run it can be several times the patch norm that the final weights produce, and eval
accuracy collapses while train accuracy is fine. Re-estimating every statistic with a few
batches through the final model, as a cumulative average, removes that gap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from robustdc.ops import decoupled_layers

logger = logging.getLogger(__name__)


@torch.no_grad()
def calibrate_running_stats(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Reset and re-estimate BatchNorm and decoupled running statistics on ``batches``.

    Every statistic becomes the plain average over the given batches, computed with the
    model's current weights. The model's train/eval modes and BatchNorm momenta are
    restored afterwards; parameters do not change.

    Returns:
        the number of batches used (0 leaves the model unchanged).
    """
    batches = list(batches)
    if not batches:
        return 0
    modes = [module.training for module in model.modules()]
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    momenta = [norm.momentum for norm in norms]
    adaptive = [layer for layer in decoupled_layers(model) if layer.adaptive_radius]
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average
        for layer in adaptive:
            layer.running_norm.fill_(1.0)
            layer.num_batches_tracked.zero_()
        model.train()
        for batch in batches:
            model(batch)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        for module, training in zip(model.modules(), modes, strict=True):
            module.train(training)
    # NOTE: the decoupled layers average as 1/n only for their first 1/radius_momentum
    # batches, so more batches than that would weight the last ones more.
    logger.debug("recalibrated running statistics on %d batches", len(batches))
    return len(batches)
