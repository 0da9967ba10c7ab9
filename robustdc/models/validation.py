"""Argument checks shared by the model factory and the architectures.

Errors name the rejected value and the allowed values, and for a misspelled name they
suggest the closest allowed one, so that a command-line typo is fixed in one step.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


def check_choice(kind: str, value: object, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ``ValueError``.

    The message names ``kind``, the value, every allowed value and, when one is close
    (``difflib.get_close_matches``, case-insensitive), a "did you mean" suggestion.
    """
    allowed = list(allowed)
    if isinstance(value, str) and value in allowed:
        return value

    message = f"unknown {kind} {value!r}; expected one of: {', '.join(allowed)}"
    if isinstance(value, str):
        by_lower = {name.lower(): name for name in allowed}
        close = difflib.get_close_matches(value.lower(), list(by_lower), n=1)
        if close:
            message += f". Did you mean {by_lower[close[0]]!r}?"
    raise ValueError(message)


def check_model_size(num_classes: int, in_channels: int, width: float) -> None:
    """Raise a ``ValueError`` unless the arguments describe a buildable classifier.

    ``num_classes`` must be an integer of at least 2, ``in_channels`` an integer of at
    least 1 and ``width`` (the channel multiplier) a finite number above 0.
    """
    if not _is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not _is_int(in_channels) or in_channels < 1:
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if (
        isinstance(width, bool)
        or not isinstance(width, (int, float))
        or not math.isfinite(width)
        or width <= 0
    ):
        raise ValueError(f"width must be a finite number > 0, got {width!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
