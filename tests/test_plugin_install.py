"""Real third-party packages: written to disk, pip-installed, discovered through entry points."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from tests.conftest import pip_install_target, runs_of, suite_cmd, write_plugin_package

pytestmark = pytest.mark.slow

PLUGIN_CODE = '''
import torch
from suite import Param, Space, hookimpl


def make_tiny_sgd(ctx, lr):
    return torch.optim.SGD(ctx.model.parameters(), lr=lr)


@hookimpl
def suite_register_optimizers(register):
    register(
        name="{name}",
        factory=make_tiny_sgd,
        description="Plain SGD from a third-party package",
        params=[Param("lr", 0.05, low=0, low_inclusive=False, space=Space.log(1e-3, 1.0))],
    )
'''


def test_installed_plugin_is_listed_and_runs(tmp_path, workdir):
    site = tmp_path / "site"
    pkg = write_plugin_package(tmp_path / "src", "suite-tiny", "suite_tiny", PLUGIN_CODE.format(name="tinysgd"))
    env = pip_install_target(pkg, site)

    listed = suite_cmd("list", "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    entry = next(d for d in json.loads(listed.stdout) if d["name"] == "tinysgd")
    assert entry["family"] == "optimizer" and entry["distribution"] == "suite-tiny" and entry["version"] == "0.1"

    ran = suite_cmd("run", "--optimizer", "tinysgd", "--epochs", "2", "--quiet", env=env, cwd=workdir)
    assert ran.returncode == 0, ran.stderr
    (run,) = runs_of(MlflowClient(), "linreg")
    assert run.data.tags["suite.dist.optimizer"] == "suite-tiny==0.1"
    assert run.data.params["optimizer.lr"] == "0.05"

    # Without the package on the path the name is unknown again: nothing was installed globally.
    assert suite_cmd("run", "--optimizer", "tinysgd", "--epochs", "1", cwd=workdir).returncode == 2


def test_second_package_taking_a_name_fails_naming_both(tmp_path, workdir):
    site = tmp_path / "site"
    pkg = write_plugin_package(tmp_path / "src", "suite-dup", "suite_dup", PLUGIN_CODE.format(name="sgd"))
    env = pip_install_target(pkg, site)
    res = suite_cmd("list", env=env)
    assert res.returncode == 0  # suite list is how the author diagnoses it: it works and shows the conflict
    err = res.stderr.strip().splitlines()
    assert err == ["conflict: optimizer 'sgd' is registered twice: by sgd-suite and by suite-dup; "
                   "uninstall one of them or rename the component"]
    run = suite_cmd("run", "--optimizer", "sgd", "--epochs", "1", env=env, cwd=workdir)
    assert run.returncode == 2 and "registered twice: by sgd-suite and by suite-dup" in run.stderr
    assert suite_cmd("run", "--optimizer", "precond", "--epochs", "1", "--quiet", env=env, cwd=workdir).returncode == 0
