"""Follow docs/plugins.md literally: write its package, pip-install it, run the kit, run it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import pip_install_target, run_pytest, runs_of, suite_cmd

pytestmark = pytest.mark.slow

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def guide_files(package: str = "suite-signsgd") -> dict[str, str]:
    """The files of one of the guide's packages, each a code block announced by
    ``<!-- file: NAME -->`` (the first package) or ``<!-- file: PACKAGE/NAME -->``."""
    text = GUIDE.read_text()
    found = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S)
    out = {}
    for path, content in found:
        pkg, _, name = path.rpartition("/")
        if (pkg or "suite-signsgd") == package:
            out[name] = content
    return out


def test_the_guide_shows_complete_packages():
    assert set(guide_files()) == {"pyproject.toml", "setup.cfg", "suite_signsgd.py"}
    assert set(guide_files("suite-examples")) == {"pyproject.toml", "setup.cfg", "suite_examples.py"}


def test_following_the_guide_gives_a_working_plugin(tmp_path, workdir):
    pkg = tmp_path / "suite-signsgd"
    pkg.mkdir()
    for name, content in guide_files().items():
        (pkg / name).write_text(content)
    env = pip_install_target(pkg, tmp_path / "site")

    kit = run_pytest("--suite-plugin=suite-signsgd", env=env, cwd=tmp_path)
    assert kit.returncode == 0, kit.stdout
    assert "6 passed" in kit.stdout  # the distribution loads cleanly, five checks for the one optimizer

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


def test_the_worked_examples_run(tmp_path, workdir):
    pkg = tmp_path / "suite-examples"
    pkg.mkdir()
    for name, content in guide_files("suite-examples").items():
        (pkg / name).write_text(content)
    env = pip_install_target(pkg, tmp_path / "site")

    kit = run_pytest("--suite-plugin=suite-examples", env=env, cwd=tmp_path)
    assert kit.returncode == 0 and "failed" not in kit.stdout, kit.stdout
    assert "1 passed" in run_pytest(  # the problem contract: optimum, curvature, true_params fit the model
        "--suite-plugin=suite-examples", "-k", "problem_contract", env=env, cwd=tmp_path).stdout

    ran = suite_cmd("run", "--problem", "ridge", "--sampler", "stratified,normweighted", "--optimizer", "sgd,precond",
                    "--lr", "0.05", "--epochs", "5", "--quiet", env=env, cwd=workdir)
    assert ran.returncode == 0, ran.stderr
    runs = runs_of(MlflowClient(), "ridge", "tags.`suite.kind` = 'run'")
    assert len(runs) == 4
    for run in runs:
        assert run.data.tags["suite.dist.problem"] == "suite-examples==0.1.0"
        assert run.data.metrics["dist_to_opt"] < 0.2  # the optimum is known, and approached
        assert run.data.metrics["val_loss"] < 0.4  # from 4.4 at the start; the noise floor is 0.25

    paired = suite_cmd("run", "--problem", "ridge", "--set", "problem.data_seed=0", "--seeds", "2", "--epochs", "1",
                       "--experiment", "paired", "--quiet", env=env, cwd=workdir)
    assert paired.returncode == 0, paired.stderr
    paired_runs = runs_of(MlflowClient(), "paired", "tags.`suite.kind` = 'run'")
    assert sorted(r.data.params["seed"] for r in paired_runs) == ["0", "1"]
    assert {r.data.params["problem.data_seed"] for r in paired_runs} == {"0"}


def test_the_stacked_averager_example_passes_the_kit_and_stacks(tmp_path, workdir):
    """docs/plugins.md §7's averager with per-row settings, as written: the kit's stacked check
    compares rows with different eta with their runs alone; a grid of it trains in one stack."""
    pkg = tmp_path / "suite-averaging"
    pkg.mkdir()
    files = guide_files("suite-averaging")
    assert set(files) == {"pyproject.toml", "setup.cfg", "suite_averaging.py"}
    for name, content in files.items():
        (pkg / name).write_text(content)
    env = pip_install_target(pkg, tmp_path / "site")

    kit = run_pytest("--suite-plugin=suite-averaging", "-rA", env=env, cwd=tmp_path)
    assert kit.returncode == 0 and "failed" not in kit.stdout and "skipped" not in kit.stdout, kit.stdout
    assert "PASSED ::test_stacked_matches_per_run[averager:polyak]" in kit.stdout, kit.stdout

    plan = suite_cmd("run", "--averager", "polyak", "--set", "averager.eta=1,8", "--seeds", "3", "--epochs", "2",
                     "--device", "cpu", "--workers", "1", "--dry-run", env=env, cwd=workdir)
    assert plan.returncode == 0, plan.stderr
    stack = "  stack of 6: linreg shuffle b32 2 epochs; optimizer/scheduler/averager sgd/constant/polyak x6"
    assert stack in plan.stdout.splitlines(), plan.stdout
    ran = suite_cmd("run", "--averager", "polyak", "--set", "averager.eta=1,8", "--seeds", "3", "--epochs", "2",
                    "--device", "cpu", "--workers", "1", "--quiet", env=env, cwd=workdir)
    assert ran.returncode == 0, ran.stderr
    runs = runs_of(MlflowClient(), "linreg", "tags.`suite.kind` = 'run'")
    assert len(runs) == 6 and {r.data.tags["suite.engine"] for r in runs} == {"stacked"}
    assert len({r.data.tags["suite.stack"] for r in runs}) == 1
    assert {r.data.params["averager.eta"] for r in runs} == {"1.0", "8.0"}
