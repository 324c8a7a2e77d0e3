"""MLflow tracking: what a run records (:mod:`.tracker`), how and when it is written
(:mod:`.queue`: batching, the writer process :mod:`.writer`, recovery), the rows MLflow keeps
(:mod:`.records`), and the fast paths that write them without MLflow's per-call cost
(:mod:`.direct` on a local sqlite store, :mod:`.bulk` on an SQL store) guarded by the tables'
columns (:mod:`.schema`); a store's failures told in one line (:mod:`.diagnose`); a run's origin
tags (:mod:`.origin`), new stores from a template (:mod:`.template`), the MLflow UI link (:mod:`.ui`).

May import: MLflow (only where its client is called), :mod:`suite.stores`, :mod:`suite.exec`,
:mod:`suite.specs`, the engine's target rule, and the core modules. Not tuning, grids, reports or
the CLI (they record through it).
"""
