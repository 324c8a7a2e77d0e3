"""The claims under the NQM closed form: the verdict each claim's own rule gives on the closed
form itself (:func:`closed_form`), and the steady-state claim's power (risk ∝ α/B) re-run on
simulated experiments whose risks are the closed form's and whose seed-to-seed scatter is the one
measured.

A simulated experiment has the measured one's seeds, learning rates and batch sizes; a seed's
log steady-state risk at each (α, B) is the closed form's (:func:`suite.theory.sgd_steady_risk`
summed over the NQM's dimensions, h_i = 1/i, C = noise · H) plus one measured seed's deviations
from the mean over seeds (a whole seed's vector, drawn with replacement, so the scatter keeps its
correlation across (α, B)). The claim's own function is applied to each simulated experiment;
the power is the fraction of decisive verdicts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from suite import theory
from suite.report import claims
from suite.report.power import DRAWS, SEED, Power
from suite.report.reader import RunRecord, Runs
from suite.report.stats import STEADY_TAIL, tail_mean

SECTION = "steady_state"
METHOD = "simulation under the NQM closed form with the measured seed spread"


class _Steady(NamedTuple):
    """The steady-state experiment as measured, and the closed form at its settings."""

    configs: list[tuple[float, int]]  # (lr, batch size)
    spread: np.ndarray  # [seed, config]: each seed's log risk minus the mean over seeds
    closed: np.ndarray  # [config]: the closed form's log steady-state risk


def _steady(runs: Runs) -> _Steady | None:
    """``None`` without the steady-state runs, or with fewer than 2 seeds at every (α, B)."""
    logs: dict[tuple[float, int], dict[int, float]] = {}
    first: RunRecord | None = None
    for r in runs.section(SECTION):
        v = tail_mean(runs.history(r, "val_loss"), STEADY_TAIL) if r.status == "completed" else None
        if v is not None and v > 0:
            logs.setdefault((float(r.param("optimizer.lr")), r.batch_size), {})[r.seed] = math.log(v)
            first = first or r
    if first is None:
        return None
    configs = sorted(logs)
    seeds = sorted(set.intersection(*(set(by) for by in logs.values())))
    if len(seeds) < 2 or len(configs) < 3:
        return None
    measured = np.array([[logs[c][s] for c in configs] for s in seeds])
    dim, noise = int(first.param("problem.dim", 100)), float(first.param("problem.noise", 1.0))
    h = 1.0 / np.arange(1, dim + 1)
    closed = np.array([math.log(theory.sgd_steady_risk(lr, h, noise * h, b).sum()) for lr, b in configs])
    return _Steady(configs, measured - measured.mean(axis=0), closed)


def _simulated(runs: Runs, configs: list[tuple[float, int]], logs: np.ndarray) -> Runs:
    """A steady-state experiment whose seed i has log risk ``logs[i, j]`` at ``configs[j]``."""
    recs = [RunRecord(f"sim-{i}-{j}", SECTION, "", "completed", {"seed": i, "batch_size": b, "optimizer.lr": lr}, {},
                      histories={"val_loss": [(0, math.exp(logs[i, j]))]})
            for i in range(len(logs)) for j, (lr, b) in enumerate(configs)]
    return Runs(runs.experiment, runs.tracking_uri, recs, None)


def steady_state_power(runs: Runs, draws: int = DRAWS, seed: int = SEED) -> Power | None:
    """The steady-state claim's power under the closed form (``None`` without its runs, or with
    fewer than 2 seeds measured at every (α, B))."""
    found = _steady(runs)
    if found is None:
        return None
    rng = np.random.default_rng(seed)
    decisive = reproduced = 0
    n = len(found.spread)
    for _ in range(draws):
        picks = rng.integers(0, n, size=n)
        verdict = claims.steady_state(_simulated(runs, found.configs, found.closed + found.spread[picks])).verdict
        decisive += verdict in (claims.REPRODUCED, claims.CONTRADICTED)
        reproduced += verdict == claims.REPRODUCED
    return Power(decisive, draws, METHOD, reproduced)


def steady_state_closed_form(runs: Runs) -> claims.ClaimRow | None:
    """The steady-state claim's rule applied to the closed form itself (two identical seeds at the
    measured settings, no spread); ``None`` where :func:`steady_state_power` has none."""
    found = _steady(runs)
    return None if found is None else claims.steady_state(_simulated(runs, found.configs, np.stack([found.closed] * 2)))


def closed_form_powers(runs: Runs, rows: list[claims.ClaimRow], draws: int = DRAWS,
                       seed: int = SEED) -> dict[int, Power]:
    """Row index -> the closed-form power of the claims that have one (the steady-state claim)."""
    at = next((i for i, row in enumerate(rows) if row.experiment.startswith(SECTION + " ")), None)
    found = steady_state_power(runs, draws, seed) if at is not None else None
    return {at: found} if at is not None and found is not None else {}


def closed_form(runs: Runs, sweep: claims.Sweep | None = None) -> dict[str, claims.ClaimRow]:
    """Claim -> its own rule applied to the NQM closed form instead of the runs: the swept claims
    (:data:`suite.report.claims.SWEPT`) on :meth:`~suite.report.claims.Sweep.closed_form` (each
    cell at its exact optimum, read as the runs read their steps), the steady-state claim on the
    closed form's steady-state risks (:func:`steady_state_closed_form`). Claims with no closed form
    here are absent."""
    sweep = sweep or claims.Sweep(runs)
    out: dict[str, claims.ClaimRow] = {}
    if sweep.tuned:
        theory_sweep = sweep.closed_form()
        for f in claims.SWEPT:
            row = f(runs, theory_sweep)
            if not row.measured.startswith("no data"):
                out[row.claim] = row
    steady = steady_state_closed_form(runs)
    if steady is not None:
        out[steady.claim] = steady
    return out
