"""How a trial's hyperparameters are shown on its line (``β=0.9 lr=0.0123``)."""

from __future__ import annotations

SHORT_NAMES = {"lr": "lr", "momentum": "β", "weight_decay": "λ"}


def short_name(key: str) -> str:
    """``optimizer.momentum`` -> ``β``; other parameters keep their own name."""
    family, _, name = key.partition(".")
    return SHORT_NAMES.get(name, name) if family == "optimizer" else name


