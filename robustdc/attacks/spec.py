"""Attack specifications: the registry of attacks and the validated :class:`AttackSpec`.

An :class:`AttackSpec` fixes everything an attack run depends on: the attack, the
threat-model norm, the budget ``epsilon``, the iteration settings, the library that
implements it and attack-specific ``params``. :func:`make_spec` fills the defaults
listed in :data:`ATTACKS` and rejects invalid settings with a one-line ``ValueError``.

Units: images are in ``[0, 1]`` pixel units, so a Linf ``epsilon`` of ``8/255`` is
eight grey levels. ``epsilon`` is the Linf or L2 radius of the threat model, and
minimum-norm attacks (``cw``, ``deepfool``) take none.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from robustdc.models.validation import check_choice

NORMS: tuple[str, ...] = ("linf", "l2")
LIBRARIES: tuple[str, ...] = ("torchattacks", "foolbox")
KINDS: tuple[str, ...] = ("bounded", "minimum-norm")

ParamValue = bool | int | float | str


class FrozenParams(Mapping[str, ParamValue]):
    """Read-only, hashable mapping of attack-specific settings, e.g. ``{"queries": 5000}``."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, ParamValue] | None = None) -> None:
        self._items: dict[str, ParamValue] = dict(sorted(dict(items or {}).items()))

    def __getitem__(self, key: str) -> ParamValue:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenParams({self._items!r})"

    def __getstate__(self) -> dict[str, ParamValue]:
        return self._items

    def __setstate__(self, state: dict[str, ParamValue]) -> None:
        self._items = state


@dataclass(frozen=True)
class ParamInfo:
    """One attack-specific setting.

    Attributes:
        default: value used when the caller gives none.
        check: ``check(name, value)`` returns the normalized value or raises
            ``ValueError``.
        libraries: the libraries that take this setting.
        description: what the setting controls, for help text.
    """

    default: ParamValue
    check: Callable[[str, object], ParamValue]
    libraries: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class AttackInfo:
    """Registry entry of one attack.

    Attributes:
        name: registry name, e.g. ``"pgd"``.
        kind: ``"bounded"`` (fooling within ``epsilon``) or ``"minimum-norm"`` (the
            smallest perturbation that flips the label, no ``epsilon``).
        libraries_by_norm: for each supported norm, the libraries that implement it.
            The first library is the default.
        default_steps: iterations when the caller gives none; ``None`` when the attack
            has no ``steps`` setting.
        fixed_steps: the attack always runs exactly ``default_steps`` steps.
        step_size_rule: how the default ``step_size`` follows from ``epsilon`` and
            ``steps``, in words; empty when the attack has no step size.
        default_step_size: computes the default ``step_size`` from ``(epsilon,
            steps)``; ``None`` when the attack has no step size.
        allows_restarts: whether ``restarts`` above 1 are supported.
        params: attack-specific settings by name.
        description: one line for help text.
    """

    name: str
    kind: str
    libraries_by_norm: Mapping[str, tuple[str, ...]]
    default_steps: int | None
    fixed_steps: bool
    step_size_rule: str
    default_step_size: Callable[[float | None, int | None], float] | None
    allows_restarts: bool
    params: Mapping[str, ParamInfo]
    description: str

    @property
    def norms(self) -> tuple[str, ...]:
        """The supported norms, the default first."""
        return tuple(self.libraries_by_norm)

    @property
    def libraries(self) -> tuple[str, ...]:
        """Every library that implements the attack for some norm."""
        found: list[str] = []
        for libraries in self.libraries_by_norm.values():
            found.extend(library for library in libraries if library not in found)
        return tuple(found)

    def default_library(self, norm: str) -> str:
        """Return the library used for ``norm`` when the caller names none."""
        return self.libraries_by_norm[norm][0]


def parse_number(value: object, name: str) -> float:
    """Parse a number given as ``int``, ``float`` or a string such as ``"8/255"``.

    Raises:
        ValueError: the value is a bool, not a number, or a malformed fraction.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number such as 0.03 or '8/255', got {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                numerator, denominator = text.split("/", 1)
                return float(Fraction(numerator.strip()) / Fraction(denominator.strip()))
            return float(text)
        except (ValueError, ZeroDivisionError) as err:
            raise ValueError(
                f"invalid {name} {value!r}; write a number such as 0.03 or 8/255"
            ) from err
    raise ValueError(f"{name} must be a number such as 0.03 or '8/255', got {value!r}")


def check_epsilon(value: object, norm: str, attack: str) -> float:
    """Return ``value`` as a float ``epsilon`` valid for ``norm``, or raise ``ValueError``.

    A Linf budget must lie in ``[0, 1]`` because pixels do. An L2 budget may exceed 1
    (an MNIST image has 784 pixels), so it only has to be finite and non-negative.
    """
    epsilon = parse_number(value, f"epsilon of {attack}")
    if not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon of {attack} must be finite and >= 0, got {value!r}")
    if norm == "linf" and epsilon > 1:
        hint = ""
        if epsilon <= 255:
            hint = f" (did you mean {value}/255?)"
        raise ValueError(
            f"Linf epsilon of {attack} must be in [0, 1] because images are scaled to "
            f"[0, 1], got {value!r}{hint}"
        )
    return epsilon


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive_int(name: str, value: object) -> ParamValue:
    return _check_int(name, value, 1)


def _check_at_least_two(name: str, value: object) -> ParamValue:
    return _check_int(name, value, 2)


def _check_float(name: str, value: object, low: float, high: float, low_open: bool) -> float:
    number = parse_number(value, name)
    below = number <= low if low_open else number < low
    if not math.isfinite(number) or below or number > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return number


def _check_positive(name: str, value: object) -> ParamValue:
    return _check_float(name, value, 0.0, math.inf, low_open=True)


def _check_non_negative(name: str, value: object) -> ParamValue:
    return _check_float(name, value, 0.0, math.inf, low_open=False)


def _check_probability(name: str, value: object) -> ParamValue:
    return _check_float(name, value, 0.0, 1.0, low_open=True)


def _check_bool(name: str, value: object) -> ParamValue:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


_BOTH = ("torchattacks", "foolbox")


def _kurakin_step(epsilon: float | None, steps: int | None) -> float:
    # Basic iterative method: a total travel of 1.25 * epsilon split over the steps.
    return 1.25 * float(epsilon or 0.0) / int(steps or 1)


def _madry_step(epsilon: float | None, steps: int | None) -> float:
    return 2.5 * float(epsilon or 0.0) / int(steps or 1)


ATTACKS: dict[str, AttackInfo] = {
    "fgsm": AttackInfo(
        name="fgsm",
        kind="bounded",
        libraries_by_norm={"linf": _BOTH},
        default_steps=1,
        fixed_steps=True,
        step_size_rule="epsilon (one signed-gradient step)",
        default_step_size=lambda epsilon, steps: float(epsilon or 0.0),
        allows_restarts=False,
        params={},
        description="fast gradient sign method (Goodfellow et al. 2015)",
    ),
    "bim": AttackInfo(
        name="bim",
        kind="bounded",
        libraries_by_norm={"linf": _BOTH},
        default_steps=10,
        fixed_steps=False,
        # With epsilon 8/255 and 10 steps this is 1/255, the BIM step of the CIFAR-10
        # robustness experiments of Liu et al. (Decoupled Networks, CVPR 2018).
        step_size_rule="1.25 * epsilon / steps (Kurakin et al. 2016 budget)",
        default_step_size=_kurakin_step,
        allows_restarts=False,
        params={},
        description="basic iterative method: iterated FGSM without random start",
    ),
    "pgd": AttackInfo(
        name="pgd",
        kind="bounded",
        libraries_by_norm={"linf": _BOTH, "l2": _BOTH},
        default_steps=20,
        fixed_steps=False,
        step_size_rule="2.5 * epsilon / steps (Madry et al. 2018)",
        default_step_size=_madry_step,
        allows_restarts=True,
        params={
            "random_start": ParamInfo(
                True, _check_bool, _BOTH, "start from a uniform random point in the ball"
            ),
        },
        description="projected gradient descent with random start (Madry et al. 2018)",
    ),
    "cw": AttackInfo(
        name="cw",
        kind="minimum-norm",
        # foolbox first: torchattacks 3.5.1 maps pixels at exactly 0 or 1 to an infinite
        # tanh-space value, so its CW never changes them (most of an MNIST digit), and
        # it has no binary search over the constant.
        libraries_by_norm={"l2": ("foolbox", "torchattacks")},
        # foolbox's defaults (10000 steps per constant, learning rate 0.01, 9 binary
        # search steps from 1e-3) took over 11 minutes for 16 MNIST images on a 2-core
        # CPU. These settings flipped all 16 in 16 s with a smaller median L2 than
        # DeepFool. At learning rate 0.01, 200 steps flipped only 13 of 16, because
        # foolbox puts pixels at 0 or 1 near +-7.25 in tanh space, where they move slowly.
        default_steps=200,
        fixed_steps=False,
        step_size_rule="0.05 (Adam learning rate in tanh space, independent of epsilon)",
        default_step_size=lambda epsilon, steps: 0.05,
        allows_restarts=False,
        params={
            "kappa": ParamInfo(0.0, _check_non_negative, _BOTH, "confidence margin"),
            "c": ParamInfo(1.0, _check_positive, ("torchattacks",), "fixed trade-off constant"),
            "initial_const": ParamInfo(
                1e-2, _check_positive, ("foolbox",), "first constant of the binary search"
            ),
            "binary_search_steps": ParamInfo(
                5, _check_positive_int, ("foolbox",), "binary search steps over the constant"
            ),
        },
        description="Carlini-Wagner L2, minimum norm (foolbox: steps per search constant)",
    ),
    "deepfool": AttackInfo(
        name="deepfool",
        kind="minimum-norm",
        libraries_by_norm={"l2": ("foolbox", "torchattacks"), "linf": ("foolbox",)},
        default_steps=50,
        fixed_steps=False,
        step_size_rule="",
        default_step_size=None,
        allows_restarts=False,
        params={
            "overshoot": ParamInfo(0.02, _check_non_negative, _BOTH, "overshoot factor"),
            "candidates": ParamInfo(
                10, _check_at_least_two, ("foolbox",), "most likely classes considered"
            ),
        },
        description="DeepFool (Moosavi-Dezfooli et al. 2016), minimum norm",
    ),
    "square": AttackInfo(
        name="square",
        kind="bounded",
        libraries_by_norm={"linf": ("torchattacks",), "l2": ("torchattacks",)},
        default_steps=None,
        fixed_steps=False,
        step_size_rule="",
        default_step_size=None,
        allows_restarts=True,
        params={
            "queries": ParamInfo(5000, _check_positive_int, _BOTH, "model queries per image"),
            "p_init": ParamInfo(
                0.8, _check_probability, _BOTH, "initial fraction of pixels changed"
            ),
        },
        description="Square attack: score-based black box (Andriushchenko et al. 2020)",
    ),
    "autoattack": AttackInfo(
        name="autoattack",
        kind="bounded",
        libraries_by_norm={"linf": ("torchattacks",), "l2": ("torchattacks",)},
        default_steps=100,
        fixed_steps=False,
        step_size_rule="",
        default_step_size=None,
        allows_restarts=False,
        params={
            "queries": ParamInfo(
                5000, _check_positive_int, _BOTH, "Square attack queries per image"
            ),
            "target_classes": ParamInfo(
                9, _check_positive_int, _BOTH, "target classes of APGD-T and FAB-T"
            ),
        },
        description=("AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square (Croce and Hein 2020)"),
    ),
}


def list_attacks() -> list[str]:
    """Return the registered attack names in registry order."""
    return list(ATTACKS)


@dataclass(frozen=True)
class AttackSpec:
    """A fully resolved attack setting, built by :func:`make_spec`.

    Attributes:
        name: attack name, a key of :data:`ATTACKS`.
        norm: ``"linf"`` or ``"l2"``.
        epsilon: threat-model radius in ``[0, 1]`` pixel units (L2 may exceed 1);
            ``None`` for minimum-norm attacks.
        steps: iterations, or ``None`` for attacks without a step count (square).
        step_size: step per iteration in pixel units (the Adam learning rate for cw),
            or ``None`` for attacks without a step size.
        restarts: independent runs per image. The result keeps, per image, the first
            run that fools the model.
        library: ``"torchattacks"`` or ``"foolbox"``.
        params: attack-specific settings. Construction fills in the defaults of the
            settings not given.

    Construction validates every field and raises ``ValueError`` on an invalid one.
    """

    name: str
    norm: str
    epsilon: float | None
    steps: int | None
    step_size: float | None
    restarts: int
    library: str
    params: Mapping[str, ParamValue] = field(default_factory=FrozenParams)

    def __post_init__(self) -> None:
        info = ATTACKS[check_choice("attack", self.name, ATTACKS)]
        _check_norm_and_library(info, self.norm, self.library)
        object.__setattr__(self, "epsilon", _check_spec_epsilon(info, self.norm, self.epsilon))
        object.__setattr__(self, "steps", _check_steps(info, self.steps))
        object.__setattr__(self, "step_size", _check_step_size(info, self))
        object.__setattr__(self, "restarts", _check_restarts(info, self.restarts))
        object.__setattr__(self, "params", _check_params(info, self.library, self.params))

    def __hash__(self) -> int:
        return hash(
            (
                self.name,
                self.norm,
                self.epsilon,
                self.steps,
                self.step_size,
                self.restarts,
                self.library,
                self.params,
            )
        )

    @property
    def info(self) -> AttackInfo:
        """The registry entry of the attack."""
        return ATTACKS[self.name]

    @property
    def kind(self) -> str:
        """``"bounded"`` or ``"minimum-norm"``."""
        return self.info.kind

    @property
    def label(self) -> str:
        """Short name for tables, e.g. ``"bim-linf-eps0.0314"`` or ``"deepfool-l2"``.

        The library is appended when it is not the default one for the norm.
        """
        parts = [self.name, self.norm]
        if self.epsilon is not None:
            parts.append(f"eps{self.epsilon:.3g}")
        if self.library != self.info.default_library(self.norm):
            parts.append(self.library)
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Return every setting as JSON-serializable values, plus ``kind`` and ``label``."""
        return {
            "name": self.name,
            "norm": self.norm,
            "epsilon": self.epsilon,
            "steps": self.steps,
            "step_size": self.step_size,
            "restarts": self.restarts,
            "library": self.library,
            "params": dict(self.params),
            "kind": self.kind,
            "label": self.label,
        }


def make_spec(
    name: str,
    *,
    norm: str | None = None,
    epsilon: float | str | None = None,
    steps: int | None = None,
    step_size: float | str | None = None,
    restarts: int | None = None,
    library: str | None = None,
    **params: ParamValue,
) -> AttackSpec:
    """Build a validated :class:`AttackSpec`, filling defaults from :data:`ATTACKS`.

    Args:
        name: attack name, one of :func:`list_attacks`.
        norm: ``"linf"`` or ``"l2"``; default: the attack's first norm.
        epsilon: budget as a number or a string such as ``"8/255"``. Required for
            bounded attacks, rejected for minimum-norm attacks.
        steps: iterations; default from the registry.
        step_size: step per iteration (number or ``"1/255"``); default from the
            registry's rule, e.g. ``1.25 * epsilon / steps`` for bim.
        restarts: independent runs per image (pgd and square only); default 1.
        library: ``"torchattacks"`` or ``"foolbox"``; default: the attack's first
            library for the norm.
        **params: attack-specific settings such as ``queries=1000`` for square.

    Raises:
        ValueError: one line naming the invalid value and the allowed values.
    """
    info = ATTACKS[check_choice("attack", name, ATTACKS)]
    if norm is None:
        norm = info.norms[0]
    _check_norm(info, norm)
    if library is None:
        library = info.default_library(norm)
    _check_norm_and_library(info, norm, library)

    resolved_epsilon = _check_spec_epsilon(info, norm, epsilon)
    if steps is None:
        steps = info.default_steps
    steps = _check_steps(info, steps)
    if step_size is None and info.default_step_size is not None:
        resolved_step_size: float | None = info.default_step_size(resolved_epsilon, steps)
    elif step_size is None:
        resolved_step_size = None
    else:
        resolved_step_size = parse_number(step_size, f"step_size of {name}")

    return AttackSpec(
        name=name,
        norm=norm,
        epsilon=resolved_epsilon,
        steps=steps,
        step_size=resolved_step_size,
        restarts=1 if restarts is None else restarts,
        library=library,
        params=FrozenParams(params),
    )


def _check_norm(info: AttackInfo, norm: str) -> None:
    if norm not in info.norms:
        raise ValueError(
            f"{info.name} does not support norm {norm!r}; expected one of: "
            f"{', '.join(info.norms)}" + _did_you_mean(str(norm).lower(), list(info.norms))
        )


def _check_norm_and_library(info: AttackInfo, norm: str, library: str) -> None:
    _check_norm(info, norm)
    check_choice("library", library, LIBRARIES)
    allowed = info.libraries_by_norm[norm]
    if library not in allowed:
        raise ValueError(
            f"{info.name} with norm {norm} is not available from {library}; "
            f"expected library one of: {', '.join(allowed)}"
        )


def _check_spec_epsilon(info: AttackInfo, norm: str, epsilon: object) -> float | None:
    if info.kind == "minimum-norm":
        if epsilon is not None:
            raise ValueError(
                f"{info.name} is a minimum-norm attack and takes no epsilon, got "
                f"{epsilon!r}; it reports the per-sample perturbation norm instead"
            )
        return None
    if epsilon is None:
        raise ValueError(f"{info.name} needs an epsilon, e.g. epsilon='8/255'")
    return check_epsilon(epsilon, norm, info.name)


def _check_steps(info: AttackInfo, steps: object) -> int | None:
    if info.default_steps is None:
        if steps is not None:
            hint = " (set queries instead)" if "queries" in info.params else ""
            raise ValueError(f"{info.name} takes no steps, got {steps!r}{hint}")
        return None
    checked = _check_int(f"steps of {info.name}", steps, 1)
    if info.fixed_steps and checked != info.default_steps:
        raise ValueError(
            f"{info.name} always runs {info.default_steps} step(s), got steps={steps!r}"
        )
    return checked


def _check_step_size(info: AttackInfo, spec: AttackSpec) -> float | None:
    if info.default_step_size is None:
        if spec.step_size is not None:
            raise ValueError(f"{info.name} takes no step_size, got {spec.step_size!r}")
        return None
    step_size = _check_float(
        f"step_size of {info.name}", spec.step_size, 0.0, math.inf, low_open=True
    )
    if info.fixed_steps and step_size != spec.epsilon:
        raise ValueError(
            f"the step_size of {info.name} is its epsilon ({spec.epsilon!r}), "
            f"got step_size={spec.step_size!r}"
        )
    return step_size


def _check_restarts(info: AttackInfo, restarts: object) -> int:
    checked = _check_int(f"restarts of {info.name}", restarts, 1)
    if checked > 1 and not info.allows_restarts:
        supported = [name for name, entry in ATTACKS.items() if entry.allows_restarts]
        raise ValueError(
            f"{info.name} takes no restarts, got restarts={restarts!r}; "
            f"attacks with restarts: {', '.join(supported)}"
        )
    return checked


def _check_params(info: AttackInfo, library: str, params: Mapping[str, object]) -> FrozenParams:
    allowed = [name for name, param in info.params.items() if library in param.libraries]
    checked: dict[str, ParamValue] = {}
    for name, value in params.items():
        if name not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            where = f"{info.name} with {library}"
            if name in info.params:
                others = ", ".join(info.params[name].libraries)
                raise ValueError(
                    f"setting {name!r} of {info.name} applies to {others} only, not "
                    f"{library}; settings of {where}: {known}"
                )
            raise ValueError(
                f"unknown setting {name!r} for {where}; expected one of: {known}"
                + _did_you_mean(name, allowed)
            )
        checked[name] = info.params[name].check(f"{name} of {info.name}", value)
    for name in allowed:
        checked.setdefault(name, info.params[name].default)
    return FrozenParams(checked)


def _did_you_mean(value: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(value, allowed, n=1)
    return f". Did you mean {close[0]!r}?" if close else ""
