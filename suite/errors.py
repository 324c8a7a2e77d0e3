"""Errors a user can cause and fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class SuiteError(Exception):
    """Base class for user-facing errors: the message says what is wrong and what to do."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnknownComponentError(SuiteError, KeyError):
    """A component name is not registered in its family."""


class UnknownParamError(SuiteError, KeyError):
    """A hyperparameter name does not belong to the component."""


class DuplicateComponentError(SuiteError):
    """Two plugins registered the same name in one family."""


class RegistrationError(SuiteError):
    """A plugin's registration is malformed."""


class SpecError(SuiteError):
    """A run specification is invalid (budget, batch size, malformed --set, ...)."""


class PluginContractError(SuiteError):
    """A plugin's factory returned something other than the torch type its family requires."""


class TuneError(SuiteError):
    """A malformed or inconsistent tuning request (``--space``, ``--budget``, ``--objective`` ...)."""


class StoreError(SuiteError):
    """A storage URL or tracking URI is malformed, or its server cannot be reached."""


class StoreFailed(SuiteError):
    """The tracking store failed while a grid was writing to it (read-only, disk full, database
    gone). Runs were logged, so this is a failure (exit code 1), not bad input: the runs finished
    before stay recorded, and the same command again runs the rest."""

    exit_code = 1


class WorkerStartError(SuiteError):
    """Worker processes keep dying before they run anything (a plugin that fails in them, a
    device that cannot be initialised). Runs were logged, so this is a failure of the grid
    (exit code 1), not bad input."""

    exit_code = 1


class TrialFailed(Exception):
    """Raised by a trial runner when a trial's run failed in plugin code (recorded as such):
    Optuna records the trial as failed and the study goes on. Not a user error."""


class ParamError(SuiteError, ValueError):
    """A hyperparameter value is malformed or out of range."""


class BenchFileError(SpecError):
    """A benchmark file is malformed; the message names file, line and key."""


class StopRun(Exception):
    """Not an error: raised by an ``on_eval`` callback to stop a run early (e.g. an Optuna pruner)."""

    def __init__(self, reason: str = "stopped") -> None:
        super().__init__(reason)
        self.reason = reason


class RowsFailed(Exception):
    """Raised by a stacked component when some of its rows failed: ``failures`` maps a row
    (position among the rows the component was given) to its exception. The other rows go on."""

    def __init__(self, failures: dict[int, BaseException]) -> None:
        super().__init__(f"{len(failures)} row(s) failed")
        self.failures = failures


class ReportError(SuiteError):
    """The report cannot be made from what the tracking store holds (one-line message)."""


class StackCheckFailed(Exception):
    """The conformance kit's stacked check found a plugin's stacked implementation wrong, or
    could not build its rows (:mod:`suite.conformance.stacks`): one message that says how to fix it."""
