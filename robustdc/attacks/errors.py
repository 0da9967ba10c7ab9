"""Exceptions of the attack package."""

from __future__ import annotations


class AttackError(RuntimeError):
    """An attack library failed while attacking a model.

    The message names the attack and the library class, and the library's exception is
    chained as ``__cause__``. Invalid attack settings raise ``ValueError`` instead.
    """
