"""Training: a RunSpec's components built and trained one run at a time (:mod:`.loop`), or many
compatible runs as one batched model, a stack (:mod:`.stack`); how a list of specs is cut into
work units (:mod:`.units`); a stack's evaluations gathered per step (:mod:`.evalbatch`); steps to
a target (:mod:`.target`); torch's compiler kept unimported until used (:mod:`.lazy_dynamo`).

May import: torch, the plugin contract (:mod:`suite.problem`, :mod:`suite.contract`,
:mod:`suite.stacked`, :mod:`suite.context`), :mod:`suite.specs`, :mod:`suite.exec`, the registry
and errors. Not tracking, tuning, grids, reports or the CLI: the engine knows no store.
"""
