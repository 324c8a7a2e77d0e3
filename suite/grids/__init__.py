"""A grid of runs on this machine: run a list of specs with tracking, resume, a parent run,
progress and the summary (:mod:`.local`); a work unit as a pool task (:mod:`.tasks`); and the
claims through which invocations of one grid share its specs (:mod:`.locks`).

May import: the engine, :mod:`suite.exec`, :mod:`suite.specs`, :mod:`suite.tracking`, the report's
tables, progress and the core modules. Not :mod:`suite.tuning`, :mod:`suite.api` or the CLI.
"""
