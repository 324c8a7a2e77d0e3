"""Where a run came from, as tags on every run the suite creates: who ran it (``mlflow.user``,
the runs table's User column), the command (``mlflow.source.name``), the suite's source commit
(``mlflow.source.git.commit``, when the suite runs from a git checkout) and the versions of the
tools that shaped the result (torch, MLflow, Optuna).

MLflow's own context providers (``mlflow.tracking.context.registry.resolve_tags``) would give
the user and source too, but importing them costs seconds (they load every provider); these are
the same tag names, read once per process."""

from __future__ import annotations

import functools
import getpass
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import suite
from suite.vocab import TAG_MLFLOW_VERSION, TAG_OPTUNA_VERSION, TAG_TORCH, TAG_VERSION

USER = "mlflow.user"  # mlflow.utils.mlflow_tags.MLFLOW_USER
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
GIT_COMMIT = "mlflow.source.git.commit"


@functools.cache
def context_tags() -> dict[str, str]:
    """The tags above for this process (computed once)."""
    tags = {
        USER: _user(),
        SOURCE_NAME: " ".join(["suite", *sys.argv[1:2]]) if Path(sys.argv[0]).name == "suite" else "suite",
        SOURCE_TYPE: "LOCAL",
        TAG_VERSION: suite.__version__,
        TAG_TORCH: _version("torch"),
        TAG_MLFLOW_VERSION: _version("mlflow"),
        TAG_OPTUNA_VERSION: _version("optuna"),
    }
    commit = source_commit()
    if commit:
        tags[GIT_COMMIT] = commit
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name to be had (no passwd entry, no LOGNAME)
        return "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


@functools.cache
def source_commit() -> str | None:
    """The commit of the git checkout the suite's code is imported from (``None`` for an
    installed wheel, or without git); ``+dirty`` is not added: the commit names the base."""
    here = Path(suite.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None
