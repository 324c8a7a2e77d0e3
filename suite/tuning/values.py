"""How tuned hyperparameter values are printed: three significant digits, and as many as tell a
value near 1 (a momentum, β₂, a decay) from 1."""

from __future__ import annotations

import math
from typing import Any


def value_text(v: Any) -> str:
    """``0.0123`` -> ``0.0123``, ``0.99985`` -> ``0.99985`` (three significant digits of 1 − v
    where v lies within 1% of ±1), ``3`` -> ``3``, other values as ``str``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or v == 0:
        return str(int(v))
    gap = 1 - abs(v)
    if 0 < gap < 0.01:
        return f"{v:.{2 - math.floor(math.log10(gap))}f}".rstrip("0")
    return f"{v:.3g}"
