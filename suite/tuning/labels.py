"""How a trial's hyperparameters are shown on its line (``β=0.9 lr=0.0123``)."""

from __future__ import annotations

from typing import Any

SHORT_NAMES = {"lr": "lr", "momentum": "β", "weight_decay": "λ"}


def short_name(key: str) -> str:
    """``optimizer.momentum`` -> ``β``; other parameters keep their own name."""
    family, _, name = key.partition(".")
    return SHORT_NAMES.get(name, name) if family == "optimizer" else name


def format_value(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or v == 0:
        return str(int(v))
    return f"{v:.3g}"
