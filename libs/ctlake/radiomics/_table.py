"""The row type of every feature name table (``FEATURES`` in each family module)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Feature:
    """One feature of a family.

    fn: computes the value from the family's input object (see the family module).
    ibsi: the IBSI code whose definition this value equals, or None (with ``note`` saying why).
    default: enabled when a settings file lists the class with no feature names (PyRadiomics
    leaves its deprecated features out in that case).
    """

    fn: Callable[[Any], Any]
    ibsi: str | None
    default: bool = True
    note: str = ""
