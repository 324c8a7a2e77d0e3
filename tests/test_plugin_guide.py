"""Follow docs/plugins.md literally: write its package, pip-install it, run the kit, run it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import pip_install_target, run_pytest, runs_of, suite_cmd

pytestmark = pytest.mark.slow

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def guide_files() -> dict[str, str]:
    """The files the guide shows, each a code block announced by ``<!-- file: NAME -->``."""
    text = GUIDE.read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S))


def test_the_guide_shows_a_complete_package():
    assert set(guide_files()) == {"pyproject.toml", "setup.cfg", "suite_signsgd.py"}


def test_following_the_guide_gives_a_working_plugin(tmp_path, workdir):
    pkg = tmp_path / "suite-signsgd"
    pkg.mkdir()
    for name, content in guide_files().items():
        (pkg / name).write_text(content)
    env = pip_install_target(pkg, tmp_path / "site")

    kit = run_pytest("--suite-plugin=suite-signsgd", env=env, cwd=tmp_path)
    assert kit.returncode == 0, kit.stdout
    assert "5 passed" in kit.stdout  # five checks for the one optimizer

    ran = suite_cmd("run", "--optimizer", "signsgd", "--lr", "0.003", "--epochs", "3", "--quiet", env=env, cwd=workdir)
    assert ran.returncode == 0, ran.stderr
    (run,) = runs_of(MlflowClient(), "linreg")
    assert run.data.params["optimizer"] == "signsgd"
    assert run.data.tags["suite.dist.optimizer"] == "suite-signsgd==0.1.0"
    assert run.data.metrics["val_loss"] < 10

    tuned = suite_cmd("tune", "--problem", "linreg", "--optimizer", "signsgd", "--batch-size", "16", "--trials", "3",
                      "--budget", "epochs:2", "--workers", "1", "--experiment", "tuned", "--quiet",
                      env=env, cwd=workdir)
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    assert "signsgd" in tuned.stdout
    trials = runs_of(MlflowClient(), "tuned", "tags.`suite.kind` = 'trial'")
    assert len(trials) == 3 and {r.data.params["optimizer"] for r in trials} == {"signsgd"}
    assert all("optimizer.lr" in r.data.params for r in trials)
