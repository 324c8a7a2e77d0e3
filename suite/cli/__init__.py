"""The ``suite`` command line: ``suite list``, ``suite run``, ``suite tune``, ``suite report``."""

from __future__ import annotations

import click

from suite import __version__
from suite.errors import SuiteError

INTERRUPTED = ("interrupted: runs in flight were marked KILLED (suite.status=interrupted) and trials given back; "
               "run the same command again to finish the rest")


class SuiteGroup(click.Group):
    """Turns every :class:`SuiteError` into a one-line ``Error: …`` and its exit code (2), and a
    stop signal (Ctrl-C, SIGTERM; see :mod:`suite.exec.signals`) into one line and exit code 130,
    the same for every command."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a flag click refused: one line too, with where to look
            if exc.ctx is None or exc.ctx.command is self:
                raise click.UsageError(exc.format_message().replace("\n", " ")) from None
            text = f"{exc.format_message()} (see: {exc.ctx.command_path} --help)"
            err = click.ClickException(text.replace("\n", " "))
            err.exit_code = exc.exit_code
            raise err from None
        except SuiteError as exc:
            err = click.ClickException(str(exc))
            err.exit_code = exc.exit_code
            raise err from None
        except KeyboardInterrupt:
            from suite.exec.signals import EXIT_CODE

            click.echo(INTERRUPTED, err=True)
            ctx.exit(EXIT_CODE)


@click.group(cls=SuiteGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sgd-suite")
def main() -> None:
    """sgd-suite: which algorithmic choice matters at which batch size?"""


def _register_commands() -> None:
    from suite.cli import listing, report, run, tune, worker

    main.add_command(listing.list_components)
    main.add_command(run.run)
    main.add_command(tune.tune)
    main.add_command(worker.worker)
    main.add_command(report.report)


_register_commands()
