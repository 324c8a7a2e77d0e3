"""Real third-party packages: written to disk, pip-installed, discovered through entry points."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import runs_of, suite_cmd

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


def write_package(root: Path, dist: str, module: str, component: str) -> Path:
    pkg = root / dist
    pkg.mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68", "wheel"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (pkg / "setup.cfg").write_text(textwrap.dedent(f"""\
        [metadata]
        name = {dist}
        version = 0.1

        [options]
        py_modules = {module}
        install_requires = sgd-suite

        [options.entry_points]
        suite.plugins =
            {module} = {module}
        """))
    (pkg / f"{module}.py").write_text(PLUGIN_CODE.format(name=component))
    return pkg


def pip_install(pkg: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-qq", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(pkg)],
        check=True, capture_output=True, text=True,
    )


def test_installed_plugin_is_listed_and_runs(tmp_path, workdir):
    site = tmp_path / "site"
    pip_install(write_package(tmp_path / "src", "suite-tiny", "suite_tiny", "tinysgd"), site)
    env = {"PYTHONPATH": str(site)}

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
    pip_install(write_package(tmp_path / "src", "suite-dup", "suite_dup", "sgd"), site)
    res = suite_cmd("list", env={"PYTHONPATH": str(site)})
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1
    assert "optimizer 'sgd' is registered twice" in err[0]
    assert "sgd-suite" in err[0] and "suite-dup" in err[0]
