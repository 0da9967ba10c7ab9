"""Robustness evaluation: white-box, transfer and minimum-norm, with sanity checks.

Example::

    from robustdc.attacks import make_spec
    from robustdc.evaluation import EvaluationRequest, Evaluator

    spec = make_spec("bim", epsilon=0.3)
    report = Evaluator("runs").evaluate(EvaluationRequest("tanhconv", [spec]))
"""

from robustdc.evaluation.checks import InvariantError, ModelSnapshot, check_adversarial
from robustdc.evaluation.harness import (
    KINDS,
    EvaluationReport,
    EvaluationRequest,
    Evaluator,
    rescale_epsilon,
    with_epsilons,
)

__all__ = [
    "KINDS",
    "EvaluationReport",
    "EvaluationRequest",
    "Evaluator",
    "InvariantError",
    "ModelSnapshot",
    "check_adversarial",
    "rescale_epsilon",
    "with_epsilons",
]
