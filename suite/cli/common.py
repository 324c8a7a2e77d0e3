"""Options shared by ``suite run``, ``suite tune`` and ``suite worker``."""

from __future__ import annotations

from collections.abc import Callable

import click

FAMILY_FLAGS = ("problem", "sampler", "optimizer", "scheduler", "averager")


class _PlainNumber:
    """A click number type that takes numbers as people write them: Python's ``int`` and
    ``float`` also read ``1_0`` as 10 and digits of other scripts (:func:`suite.params.to_number`)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and (not value.isascii() or "_" in value):
            self.fail(f"{value!r} is not a plain number (digits, no underscores)", param, ctx)
        return super().convert(value, param, ctx)


class Int(_PlainNumber, click.types.IntParamType):
    """``click.INT`` for plain numbers."""


class Float(_PlainNumber, click.types.FloatParamType):
    """``click.FLOAT`` for plain numbers."""


class IntRange(_PlainNumber, click.IntRange):
    """``click.IntRange`` for plain numbers."""


INT, FLOAT = Int(), Float()
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
            click.option("--workers", type=INT, default=None,
                         help="CPU worker processes when no GPU is used (default: number of cores)."),
            click.option("--quiet", "-q", is_flag=True, help="No progress output (for CI)."),
        ]
    ):
        f = opt(f)
    return f


def storage_options(f: Callable) -> Callable:
    """``--storage URL`` (env ``SUITE_STORAGE``), ``--heartbeat`` and ``--grace``: where the
    Optuna studies live, and how a dead worker's trial is detected (database storages)."""
    from suite.stores import DEFAULT_HEARTBEAT, DEFAULT_STORAGE

    for opt in reversed(
        [
            click.option(
                "--storage", default=None, envvar="SUITE_STORAGE", show_envvar=True, metavar="URL",
                help="Optuna storage: postgresql://user:pw@host:5432/db to share the work with other machines, "
                     f"sqlite:///file.db, or a journal file (default {DEFAULT_STORAGE}).",
            ),
            click.option("--heartbeat", type=IntRange(min=1), default=DEFAULT_HEARTBEAT, show_default=True,
                         help="Seconds between heartbeats of a running trial (database storages)."),
            click.option("--grace", type=IntRange(min=1), default=None,
                         help="Seconds without a heartbeat after which a trial counts as lost: it is failed "
                              "and retried (default: 3 x --heartbeat)."),
        ]
    ):
        f = opt(f)
    return f


def format_option(f: Callable) -> Callable:
    """``--format text|json``: a summary for people, or one JSON document for scripts."""
    return click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, help="text, or json: one JSON document on stdout for scripts.")(f)


def command_line(ctx: click.Context) -> str:
    """The command as given, rebuilt from the options that were set (not their defaults)."""
    import shlex

    from suite.stores import describe

    words = ["suite", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "storage" and value:
            value = describe(value)  # no password in a param
        if ctx.get_parameter_source(param.name) in (None, click.core.ParameterSource.DEFAULT) or value is None:
            continue
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif getattr(param, "is_flag", False):
            words += [param.opts[0]] if value else []
        else:
            for v in value if getattr(param, "multiple", False) else [value]:
                words += [param.opts[0], str(v)]
    return shlex.join(words)


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    from suite import progress

    progress.VERBOSE = bool(value)  # for this invocation: every Progress it draws
    return value


def verbose_option() -> click.Option:
    """``--verbose``/``-v``, one definition that every command carries (added by
    :func:`suite.cli._register_commands`): a line per finished run and per trial instead of the
    progress bars (:data:`suite.progress.VERBOSE`)."""
    return click.Option(["--verbose", "-v"], is_flag=True, expose_value=False, callback=_set_verbose,
                        help="A line per finished run and per trial, instead of progress bars.")


def verbose() -> bool:
    """Whether this invocation was given ``--verbose``."""
    from suite import progress

    return progress.VERBOSE


def echoes(quiet: bool) -> dict:
    """``out`` (stdout), ``err`` (stderr), ``progress`` (stderr unless ``quiet``) and ``bar`` (a
    :class:`suite.progress.Progress` of a set of studies' trials: a bar, or a line per trial
    with ``--verbose``) for the library functions that report as they go
    (:func:`suite.api.tuning.run_requests`)."""
    from suite.progress import Progress

    def err(line: str) -> None:
        click.echo(line, err=True)

    def bar(label: str) -> Progress:
        return Progress(0, quiet=quiet, unit="trial", label=label)

    return {"out": click.echo, "err": err, "progress": (lambda line: None) if quiet else err, "bar": bar}
