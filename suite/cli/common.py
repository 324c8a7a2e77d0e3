"""Options shared by ``suite run`` and ``suite tune``."""

from __future__ import annotations

from collections.abc import Callable

import click

FAMILY_FLAGS = ("problem", "sampler", "optimizer", "scheduler", "averager")
SHORTCUTS = {"lr": "optimizer.lr", "momentum": "optimizer.momentum", "weight_decay": "optimizer.weight_decay"}


def tracking_options(f: Callable) -> Callable:
    """``--experiment``, ``--tracking-uri``, ``--device``, ``--workers``, ``--quiet``."""
    for opt in reversed(
        [
            click.option("--experiment", default=None, help="MLflow experiment (default: the problem's name)."),
            click.option(
                "--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
                help="MLflow tracking URI (default: MLflow's own, sqlite:///mlflow.db here).",
            ),
            click.option("--device", default="auto", show_default=True,
                         help="auto, cpu, cuda, or a list such as cuda:0,cuda:1."),
            click.option("--workers", type=int, default=None,
                         help="CPU worker processes when no GPU is used (default: number of cores)."),
            click.option("--quiet", "-q", is_flag=True, help="No progress output (for CI)."),
        ]
    ):
        f = opt(f)
    return f
