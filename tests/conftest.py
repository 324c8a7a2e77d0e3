"""Shared fixtures: a real MLflow store in a temp dir, a CLI runner, pip-installed plugins."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from suite.cli import main

BIN = Path(sys.executable).parent


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh directory with MLflow's store there (as a newcomer's working dir)."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return tmp_path


@pytest.fixture
def tracking_uri(workdir):
    return os.environ["MLFLOW_TRACKING_URI"]


@pytest.fixture
def mlflow_client(tracking_uri):
    return MlflowClient(tracking_uri=tracking_uri)


@pytest.fixture
def cli(workdir):
    """Invoke the ``suite`` command in-process; returns click's Result."""
    runner = CliRunner()

    def invoke(*args: str, ok: bool | None = True):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        if ok and result.exit_code != 0:
            raise AssertionError(f"suite {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}")
        return result

    return invoke


def suite_cmd(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    """Run the installed ``suite`` console script in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(BIN / "suite"), *map(str, args)], capture_output=True, text=True, env=full_env, cwd=cwd,
        timeout=timeout,
    )


def runs_of(client: MlflowClient, experiment: str, filter_string: str = ""):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=5000)


PYPROJECT = '[build-system]\nrequires = ["setuptools>=68", "wheel"]\nbuild-backend = "setuptools.build_meta"\n'


OUTPUT_GUARD_S = 300  # catches a command that hangs without printing what a test waits for; not a speed claim


class Output:
    """A running command's output (its ``stdout`` and ``stderr`` pipes), read as it comes, straight
    from the pipes and never through their buffered file objects, so that ``communicate()``
    later returns exactly the rest (prepend :meth:`text`). :meth:`until` waits for lines on
    ``stream``: an event, under a hang guard."""

    def __init__(self, proc: subprocess.Popen, stream: str = "stderr", guard: float = OUTPUT_GUARD_S) -> None:
        self.proc, self.stream, self.guard = proc, stream, guard
        self.fds = {f.fileno(): name for name in ("stdout", "stderr") if (f := getattr(proc, name)) is not None}
        self.open = set(self.fds)
        self.raw = {name: b"" for name in self.fds.values()}

    def text(self, name: str) -> str:
        """What the command printed on ``name`` so far."""
        return self.raw.get(name, b"").decode(errors="replace")

    def lines(self) -> list[str]:
        """The whole lines printed on the watched stream so far."""
        return self.text(self.stream).split("\n")[:-1]

    def until(self, done):
        """Read until ``done(lines)`` (the watched stream's whole lines so far) is truthy; return it.
        Fails if the stream ends first or nothing comes for the hang guard's seconds."""
        while not (found := done(self.lines())):
            assert any(self.fds[fd] == self.stream for fd in self.open), \
                f"the command's {self.stream} ended first:\n{self.text(self.stream)[-3000:]}"
            ready, _, _ = select.select(list(self.open), [], [], self.guard)
            assert ready, f"nothing printed for {self.guard} s:\n{self.text(self.stream)[-3000:]}"
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if chunk:
                    self.raw[self.fds[fd]] += chunk
                else:
                    self.open.discard(fd)
        return found


SESSION_EXIT_GUARD_S = 300  # catches a process that never exits; not a speed claim


def still_running(pids: list[int], guard: float = SESSION_EXIT_GUARD_S) -> list[int]:
    """Wait (on pidfds: the processes' exits, reaped or not, not a clock) until the processes
    ``pids`` have exited; return those still running when none has exited for ``guard`` seconds."""
    fds: dict[int, int] = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:  # exited and reaped already
            continue
    try:
        while fds:
            ready, _, _ = select.select(list(fds), [], [], guard)
            if not ready:
                break
            for fd in ready:
                del fds[fd]
                os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)
    return sorted(fds.values())


def wait_for_session(sid: int, guard: float = SESSION_EXIT_GUARD_S) -> None:
    """Wait (:func:`still_running`) until the processes of session ``sid`` (the writer draining its
    pipe, workers) have exited; fail naming any that outlive the hang guard."""
    pids = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True).stdout.split()
    left = still_running([int(p) for p in pids], guard)
    assert not left, f"processes of the command (session {sid}) did not exit: {left}"


def write_plugin_package(root: Path, dist: str, module: str, code: str, version: str = "0.1") -> Path:
    """Write a one-module plugin package (entry point in ``suite.plugins``) under ``root``."""
    pkg = root / dist
    pkg.mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "setup.cfg").write_text(textwrap.dedent(f"""\
        [metadata]
        name = {dist}
        version = {version}

        [options]
        py_modules = {module}
        install_requires = sgd-suite

        [options.entry_points]
        suite.plugins =
            {module} = {module}
        """))
    (pkg / f"{module}.py").write_text(textwrap.dedent(code))
    return pkg


def pip_install_target(pkg: Path, target: Path) -> dict[str, str]:
    """Really ``pip install`` ``pkg`` into ``target``; returns the env that puts it on the path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-qq", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(pkg)],
        check=True, capture_output=True, text=True,
    )
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p)}


def run_pytest(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600):
    """Run pytest in a subprocess (e.g. the conformance kit on an installed distribution)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout,
    )


def pytest_collection_modifyitems(config, items):
    """Slow end-to-end tests first (stable order otherwise): with ``-n`` workers (``make test``),
    the long ones then overlap each other instead of leaving one worker alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
