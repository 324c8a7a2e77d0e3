"""``python -m suite.cli``: the ``suite`` command."""

from suite.cli import entry

entry()
