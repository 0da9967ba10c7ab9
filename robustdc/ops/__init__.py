"""Decoupled operators: layers, model conversion and optimization helpers.

See :mod:`robustdc.ops.layers` for the formulas (Liu et al., "Decoupled Networks",
CVPR 2018).
"""

from robustdc.ops.convert import decouple
from robustdc.ops.functional import (
    ANGULARS,
    BOUNDED_MAGNITUDES,
    MAGNITUDE_TABLE,
    MAGNITUDES,
    OPERATORS,
    WEIGHTINGS,
)
from robustdc.ops.layers import DecoupledConv2d, DecoupledLinear, sync_patch_norms
from robustdc.ops.optim import (
    WeightProjection,
    decoupled_layers,
    orthogonal_penalty,
    project_weights,
    weight_gradients,
)

__all__ = [
    "ANGULARS",
    "BOUNDED_MAGNITUDES",
    "MAGNITUDES",
    "MAGNITUDE_TABLE",
    "OPERATORS",
    "WEIGHTINGS",
    "DecoupledConv2d",
    "DecoupledLinear",
    "WeightProjection",
    "decouple",
    "decoupled_layers",
    "orthogonal_penalty",
    "project_weights",
    "sync_patch_norms",
    "weight_gradients",
]
