"""Adversarial attacks from torchattacks and foolbox behind one interface.

Attacks are never re-implemented here: each library sits behind one adapter module
(``torchattacks_adapter``, ``foolbox_adapter``), imported only when an attack runs, so
``import robustdc.attacks`` stays cheap.

Example::

    from robustdc.attacks import load_suite, make_spec, run_attack

    spec = make_spec("bim", epsilon="8/255", step_size="1/255", steps=10)
    output = run_attack(model, images, labels, spec, seed=0)
    output.x_adv, output.per_sample_linf, output.info["settings"]

    specs = load_suite("paper", "cifar10")
"""

from robustdc.attacks.errors import AttackError
from robustdc.attacks.running import AttackOutput, perturbation_norms, run_attack
from robustdc.attacks.spec import (
    ATTACKS,
    KINDS,
    LIBRARIES,
    NORMS,
    AttackInfo,
    AttackSpec,
    FrozenParams,
    ParamInfo,
    check_epsilon,
    list_attacks,
    make_spec,
    parse_number,
)
from robustdc.attacks.suites import SUITES_DIR, list_suites, load_suite, suite_path

__all__ = [
    "ATTACKS",
    "KINDS",
    "LIBRARIES",
    "NORMS",
    "SUITES_DIR",
    "AttackError",
    "AttackInfo",
    "AttackOutput",
    "AttackSpec",
    "FrozenParams",
    "ParamInfo",
    "check_epsilon",
    "list_attacks",
    "list_suites",
    "load_suite",
    "make_spec",
    "parse_number",
    "perturbation_norms",
    "run_attack",
    "suite_path",
]
