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
