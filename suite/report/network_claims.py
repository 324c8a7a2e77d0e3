"""The lecture's batch-size claims tested on neural networks (``benchmarks/networks*.yaml``): the
rules of :mod:`suite.report.claims`, applied to each workload's tuned sweep on its own.

A workload is one problem (``mnist1d_mlp``, ``digits``, ...): its sections are ``scaling_*`` runs
of that problem, steps counted to the target validation loss (:func:`suite.report.scaling.risk_keys`).
Every verdict is computed from the measured runs only; the NQM fitted to the network
(:mod:`suite.report.nqm_overlay`) is shown beside them, never voted with.
"""

from __future__ import annotations

from dataclasses import replace

from suite.report import claims, scaling
from suite.report.claims import ClaimRow, Sweep
from suite.report.reader import Runs


def workloads(runs: Runs) -> list[str]:
    """The problems of the tuned scaling runs, in the order first seen."""
    return list(dict.fromkeys(str(r.param("problem")) for r in runs.with_prefix(scaling.SCALING_PREFIX)))


def is_networks(runs: Runs) -> bool:
    """Whether ``runs`` hold a scaling sweep on named problems other than the NQM (a networks study)."""
    names = {r.param("problem") for r in runs.with_prefix(scaling.SCALING_PREFIX)}
    return bool(names) and not names & {None, "nqm"}


def sub_runs(runs: Runs, problem: str) -> Runs:
    """The runs of one workload (its scaling runs), as a :class:`Runs` of their own."""
    records = [r for r in runs.with_prefix(scaling.SCALING_PREFIX) if str(r.param("problem")) == problem]
    return Runs(runs.experiment, runs.tracking_uri, records, runs.parent_run_id, runs.source)


def sweeps(runs: Runs) -> dict[str, Sweep]:
    """Workload -> its tuned sweep (:class:`suite.report.claims.Sweep`: each method at each batch size)."""
    return {w: Sweep(sub_runs(runs, w)) for w in workloads(runs)}


def experiment_of(workload: str, sweep: Sweep) -> str:
    """The experiment column of a workload's claims (its sections, what it measures)."""
    return (f"scaling_{workload}_* ({workload}, each method tuned per batch size, steps to val_loss ≤ "
            f"{sweep.target:g})")


def evaluate_sweep(workload: str, runs: Runs, sweep: Sweep) -> list[ClaimRow]:
    """The lecture's claims on one workload's sweep: momentum and Adam help at large batch sizes,
    EMA at small ones, the best lr grows with B up to a cap, the steps scale perfectly then plateau."""
    exp = experiment_of(workload, sweep)
    rows = [claims.momentum_large_batch(runs, sweep, "momentum"),  # β tuned with the lr
            claims.helps_large_and_extends(sweep, "Adam helps at large batch sizes and extends perfect scaling",
                                           sweep.find("adam"), "adam"),
            claims.ema_small_batch(runs, sweep),
            claims.best_lr_grows(runs, sweep),
            claims.perfect_scaling(runs, sweep)]
    return [replace(row, claim=f"{workload}: {row.claim}", experiment=exp) for row in rows]


def evaluate(runs: Runs) -> list[ClaimRow]:
    """Every claim's row, workload by workload (for :func:`suite.report.power.powers`: a bootstrap
    draw re-evaluates them all, paired across workloads on study index and fresh seed)."""
    return [row for w, sweep in sweeps(runs).items() for row in evaluate_sweep(w, sub_runs(runs, w), sweep)]
