"""How a trial's hyperparameters are shown on its line (``β=0.9 lr=0.0123``), and the pinned
values that tell a study's variant apart in its names (``nqm/sgd-constant-none-shuffle/β=0.9/b64-1a2b3c``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from suite.specs.naming import value_text

if TYPE_CHECKING:
    from suite.tuning.plan import StudyPlan

SHORT_NAMES = {"lr": "lr", "momentum": "β", "weight_decay": "λ"}


def short_name(key: str) -> str:
    """``optimizer.momentum`` -> ``β``; other parameters keep their own name."""
    family, _, name = key.partition(".")
    return SHORT_NAMES.get(name, name) if family == "optimizer" else name


def pinned_keys(plan: StudyPlan) -> list[str]:
    """The study's pinned method hyperparameters that switch something on (not 0, False or empty; a 0
    is a component's "off", as momentum 0): what tells variants of one method apart, as β=0.9. The
    problem's are left out: every variant of a cell shares them."""
    return [k for k, v in plan.fixed if v not in (0, False, None, "") and not k.startswith("problem.")]


def label_keys(plan: StudyPlan) -> list[str]:
    """What its runs' names show beside the components: the tuned and the pinned hyperparameters."""
    return [*dict(plan.space), *pinned_keys(plan)]


def pinned_text(plan: StudyPlan) -> str:
    """``β=0.9`` (the pinned values of :func:`pinned_keys`), or ``""``."""
    fixed = dict(plan.fixed)
    return " ".join(f"{short_name(k)}={value_text(fixed[k], 3)}" for k in pinned_keys(plan))


def readable_name(plan: StudyPlan) -> str:
    """The study's name with its pinned values (:func:`pinned_text`), which tell variants of one
    method apart: ``nqm/sgd-constant-none-shuffle/β=0.9/b64-1a2b3c`` (``/sK`` for study index K > 0);
    the plan's own name where nothing is pinned on."""
    pinned = pinned_text(plan).replace(" ", ",")
    if plan.study_name is not None or not pinned:
        return plan.name
    return f"{plan.problem}/{plan.variant.name}/{pinned}/b{plan.batch_size}-{plan.digest}{plan.index_suffix}"
