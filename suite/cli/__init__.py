"""The ``suite`` command line: ``suite list``, ``suite run``, ``suite tune``, ``suite report``,
``suite nqm fit``."""

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
    from suite.cli import listing, nqm, report, run, tune, worker

    main.add_command(listing.list_components)
    main.add_command(run.run)
    main.add_command(tune.tune)
    main.add_command(worker.worker)
    main.add_command(report.report)
    main.add_command(nqm.nqm)
    from suite.cli.common import verbose_option

    def leaves(group: click.Group):
        for cmd in group.commands.values():
            yield from leaves(cmd) if isinstance(cmd, click.Group) else [cmd]

    for cmd in leaves(main):  # --verbose: one definition, every command
        cmd.params.append(verbose_option())


_register_commands()


def entry() -> None:
    """The ``suite`` executable (and ``python -m suite.cli``): run the command, then end the
    process without tearing the interpreter down.

    Everything a command writes is written when it returns (runs committed, files closed), and
    the exit handlers (``atexit``: logging, multiprocessing, ...) still run here; what is skipped
    is the interpreter's own teardown, freeing every module and torch's C++ state one by one:
    0.5–0.8 s measured after a 16-configuration grid had printed its last line (about a fifth of
    its wall time). ``SUITE_FULL_EXIT=1`` keeps the ordinary exit. Commands called in-process
    (click's ``CliRunner``, :func:`main`) are not affected."""
    import os

    if os.environ.get("SUITE_FULL_EXIT"):
        main()
        return
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    _exit_now(code)


def _exit_now(code: object) -> None:
    """``sys.exit(code)``'s outcome (the code, or a message and 1) after the exit handlers, without
    the interpreter's teardown."""
    import atexit
    import os
    import sys
    import threading

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    shutdown, exit_hooks = getattr(threading, "_shutdown", None), getattr(atexit, "_run_exitfuncs", None)
    if not (callable(shutdown) and callable(exit_hooks)):  # Python's private hooks moved: its ordinary exit
        sys.exit(code)
    shutdown()  # as the interpreter's exit: thread pools' exit hooks, then non-daemon threads
    exit_hooks()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (suite ... | head): nothing more can be said
            pass
    os._exit(status)
