"""Work shared through an Optuna storage, by any number of processes and machines: a grid as an
Optuna study (:mod:`.grid_study`), trials enqueued once however many invocations start at once
(:mod:`.enqueue`), and the workers that claim trials and run them (:mod:`.worker`, the one
mechanism by which grids and tuning share work; ``suite worker``).

May import: the engine, :mod:`suite.exec`, :mod:`suite.specs`, :mod:`suite.tracking`, the report's
tables, and the core modules (errors, owners, registry, stores, vocab). Not :mod:`suite.tuning`,
:mod:`suite.grids`, :mod:`suite.api` or the CLI (they build on it).
"""
