"""Optuna's importances without scikit-learn's import (suite/tuning/importance.py): the plot is
drawn, scikit-learn stays importable, the off switch imports it as usual, and an Optuna that
needs scikit-learn outright gets the ordinary import. Each case in a fresh interpreter, since
what it checks is what that process has imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

DRAW = """
import sys, optuna
from suite.tuning import importance
from suite.tuning.winners import study_figures
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2 + 0.01 * t.suggest_float("y", -1, 1), 30)
figs = study_figures(study)
print("sklearn" in sys.modules)
print(sorted(figs))
values = optuna.importance.get_param_importances(study, evaluator=importance.evaluator())
print(max(values, key=values.get))
import sklearn.ensemble  # still importable for everything else
print("sklearn" in sys.modules)
"""


def _python(code: str, env: dict[str, str] | None = None) -> list[str]:
    import os

    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout.split("\n")


def test_the_importance_plot_is_drawn_without_importing_scikit_learn():
    imported, figures, top, later = _python(DRAW, {"SUITE_EAGER_SKLEARN": ""})[:4]
    assert imported == "False" and figures == "['optuna_history.png', 'optuna_importance.png']"
    assert top == "x" and later == "True"


def test_the_off_switch_imports_optuna_as_usual():
    imported, figures = _python(DRAW, {"SUITE_EAGER_SKLEARN": "1"})[:2]
    assert imported == "True" and figures == "['optuna_history.png', 'optuna_importance.png']"


def test_an_optuna_that_needs_scikit_learn_outright_gets_the_ordinary_import(tmp_path):
    pkg = tmp_path / "needs_sklearn"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import sklearn\nfrom needs_sklearn import part\n")
    (pkg / "part.py").write_text("VALUE = 1\n")
    out = _python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from suite.tuning import importance
        importance.MODULE = "needs_sklearn"
        module = importance.load()
        print(module.part.VALUE, "sklearn" in sys.modules, sys.modules["sklearn"] is not None)
    """, {"SUITE_EAGER_SKLEARN": ""})
    assert out[0] == "1 True True"
