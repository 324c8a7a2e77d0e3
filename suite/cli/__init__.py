"""The ``suite`` command line: ``suite list``, ``suite run``, ``suite tune``, ``suite report``."""

from __future__ import annotations

import click

from suite import __version__
from suite.errors import SuiteError


class SuiteGroup(click.Group):
    """Turns every :class:`SuiteError` into a one-line ``Error: …`` and its exit code (2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SuiteError as exc:
            err = click.ClickException(str(exc))
            err.exit_code = exc.exit_code
            raise err from None


@click.group(cls=SuiteGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sgd-suite")
def main() -> None:
    """sgd-suite: which algorithmic choice matters at which batch size?"""


def _register_commands() -> None:
    from suite.cli import list_cmd, report_cmd, run_cmd, tune_cmd, worker_cmd

    main.add_command(list_cmd.list_components)
    main.add_command(run_cmd.run)
    main.add_command(tune_cmd.tune)
    main.add_command(worker_cmd.worker)
    main.add_command(report_cmd.report)


_register_commands()
