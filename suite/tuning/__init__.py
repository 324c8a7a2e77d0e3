"""Tuning: Optuna studies per (problem, variant, batch size), their trials trained in populations,
and the winners re-evaluated on fresh seeds. By job: how long a trial trains (:mod:`.budget`),
what it minimises (:mod:`.objective`), variants and search spaces (:mod:`.space`, the lr cap
:mod:`.caps`), the study plan (:mod:`.plan`), trials as they train (:mod:`.trials`), how they are
shown (:mod:`.labels`), Optuna's sampler and pruner (:mod:`.sampling`), studies shared exactly
by slots (:mod:`.slots`, :mod:`.studies`), the pool's jobs (:mod:`.workers`), the session of one
``suite tune`` (:mod:`.session`), what it records in MLflow (:mod:`.tracking`), which choice wins
(:mod:`.winners`), winners at a space's edge (:mod:`.edges`) and the results read back
(:mod:`.results`).

May import: Optuna, the engine, :mod:`suite.distributed`, :mod:`suite.exec`, :mod:`suite.specs`,
:mod:`suite.tracking`, the report's statistics, style and tables (:mod:`.winners`), and the core
modules. Not :mod:`suite.grids`, :mod:`suite.api` or the CLI. (The report reads one module of it,
:mod:`.edges`.)
"""
