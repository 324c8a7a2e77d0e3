"""The report of a batch-size scaling study on neural networks (``benchmarks/networks*.yaml``): its
claims table (measured verdicts, each with its power), a summary across workloads (rank table and
AlgoPerf's performance profile), then per workload Shallue et al.'s figure, the steps and the
wall-clock time to the target per method and batch size, and the NQM fitted to the network
(``suite nqm fit``) overlaid on the measurement with their ratio.

The per-cell machinery (tuned cells, their intervals over studies and seeds, the critical batch
size) is :mod:`suite.report.scaling`'s; the claims' rules are :mod:`suite.report.claims`'s, applied per
workload by :mod:`suite.report.network_claims`.
"""

from __future__ import annotations

import math
import time

from suite.report import network_claims, network_figures, nqm_overlay, power, protocol, scaling
from suite.report.claims import Sweep
from suite.report.document import Document
from suite.report.reader import Runs
from suite.report.stats import mean_interval

INTERVALS = ("Each cell is a method tuned by Optuna at one batch size in R independent studies; a study's winner "
             "is re-run on the same fresh seeds, and the cell's value is the median over studies of the winners' "
             "mean log2 steps on them, its interval a 95% bootstrap over studies and seeds (2000 resamples of the "
             "studies, then of the seeds within each): it covers the tuning as well as the seeds. With one study "
             "the interval covers the seeds only (a t interval). Methods are compared paired on (study, fresh seed).")


def device_of(runs: Runs) -> str:
    """The devices (and hosts) the runs trained on, as their tags say; 'an unrecorded device' if none do."""
    found = sorted({r.device for r in runs.records if r.device})
    return ", ".join(found) or "an unrecorded device"


def build(runs: Runs, descriptions: dict[str, str] | None = None, draws: int = power.DRAWS) -> Document:
    """The networks report as a :class:`Document`; ``draws``: the bootstrap draws of each claim's power."""
    doc = Document(f"sgd-suite networks report: {runs.experiment}")
    sweeps = network_claims.sweeps(runs)
    fits = nqm_overlay.read_fits(runs)
    n = sum(len(network_claims.sub_runs(runs, w).records) for w in sweeps)
    doc.para(f"MLflow experiment {runs.experiment!r} at {runs.tracking_uri}: {n} re-evaluation runs of tuned "
             f"studies on {len(sweeps)} workloads ({', '.join(sweeps)}); NQM fits: "
             f"{', '.join(fits) or 'none (run suite nqm fit into this experiment)'}. Generated "
             f"{time.strftime('%Y-%m-%d %H:%M')}.")
    doc.para(INTERVALS)
    rows = network_claims.evaluate(runs)
    powers = power.powers(network_claims.evaluate, runs, draws)
    power.summary_section(doc, rows, power.summary(rows, powers))
    doc.contents()
    doc.heading("The lecture's claims on networks")
    doc.para("Each verdict is computed from the measured runs by the rule in its row (the same rules as the "
             "lecture report's NQM claims, applied to each workload on its own); the fitted NQM is shown in the "
             "workload sections, never voted with. A claim the network does not bear out reads 'contradicted' "
             "with the numbers that contradict it.")
    doc.para(power.HOW)
    doc.table(["claim", "experiment", "measured", "verdict", "power", "rule"],
              [[c.claim, c.experiment, c.measured, c.verdict, p.text(), c.rule]
               for c, p in zip(rows, powers, strict=True)])
    _summary_section(doc, sweeps)
    device = device_of(runs)
    for w, sweep in sweeps.items():
        _workload_section(doc, runs, w, sweep, fits.get(w), device, descriptions or {})
    records = [r for w in sweeps for r in network_claims.sub_runs(runs, w).records]
    found = protocol.study_edges(records, {t.winner.study: t.winner for s in sweeps.values()
                                           for t in s.tuned.values() if t.winner})
    protocol.section(doc, records, found)
    return doc


def _steps(est) -> str:
    if est.n == 0:
        return "not reached"
    out = f"{2 ** est.mean:.3g}"
    if est.n > 1 and math.isfinite(est.low) and math.isfinite(est.high):
        out += f" [{2 ** est.low:.3g}, {2 ** est.high:.3g}]"
    return out


def _crit(value: float | None, largest: int) -> str:
    if value is None:
        return "undefined"
    return f"> {largest}" if math.isinf(value) else f"{value:.0f}"


def ratios_to_best(sweeps: dict[str, Sweep]) -> dict[str, list[float]]:
    """Method -> its steps over the fewest any method needed, one value per (workload, batch size)
    cell where every method of the workload was measured (``inf`` where it never reached the target)."""
    out: dict[str, list[float]] = {}
    for sweep in sweeps.values():
        sizes = set.intersection(*(set(sweep.sizes(m)) for m in sweep.methods)) if sweep.methods else set()
        for b in sorted(sizes):
            steps = {m: sweep.tuned[(m, b)].log2_steps() for m in sweep.methods}
            reached = [2 ** e.mean for e in steps.values() if e.n]
            if not reached:
                continue
            best = min(reached)
            for m, e in steps.items():
                out.setdefault(m, []).append(2 ** e.mean / best if e.n else math.inf)
    return out


def _summary_section(doc: Document, sweeps: dict[str, Sweep]) -> None:
    doc.heading("Across workloads")
    ratios = ratios_to_best(sweeps)
    if not ratios:
        doc.para("No (workload, batch size) cell holds every method yet.")
        return
    table = []
    for m, rs in sorted(ratios.items(), key=lambda kv: mean_interval(
            math.log2(r) for r in kv[1] if math.isfinite(r)).mean):
        est = mean_interval(math.log2(r) for r in rs if math.isfinite(r))
        interval = f" [{2 ** est.low:.2f}, {2 ** est.high:.2f}]" if est.n > 1 else ""
        table.append([m, len(rs), sum(r == 1.0 for r in rs), sum(r <= 1.25 for r in rs),
                      sum(math.isinf(r) for r in rs), f"×{2 ** est.mean:.2f}{interval}" if est.n else "-"])
    doc.para("Each (workload, batch size) cell's steps of each method (the median over its studies) over the "
             "fewest any method needed there. The geometric mean's 95% t interval is over those cells (batch sizes "
             "and workloads): it says how consistently a method is near the best, not the seed noise of one cell, "
             "which the workload tables give.")
    doc.table(["method", "cells", "best", "within 1.25× of the best", "never reached", "steps / best (geometric "
               "mean, 95% interval over cells)"], table)
    doc.figure(network_figures.profile_figure(ratios), "performance_profile",
               "Performance profile: the fraction of cells in which a method is within τ of the best")


def _workload_section(doc: Document, runs: Runs, workload: str, sweep: Sweep, fit: nqm_overlay.Fit | None, device: str,
                      descriptions: dict[str, str]) -> None:
    doc.heading(f"{workload}: steps and time to val_loss ≤ {sweep.target:g}")
    described = [d for s, d in descriptions.items() if s.startswith(f"{scaling.SCALING_PREFIX}_{workload}_") and d]
    if described:
        doc.bullets(described)
    doc.figure(network_figures.shallue_figure(workload, sweep, fit, device), f"shallue_{workload}",
               f"{workload}: steps and training seconds to the target against the batch size (log-log; bars: 95% "
               "interval over studies and seeds; grey: perfect scaling; dotted: the NQM fitted to the network)")
    rows = []
    for m in sweep.methods:
        for b in sweep.sizes(m):
            t = sweep.tuned[(m, b)]
            lrs = ", ".join(f"{v:.3g}" for v in t.lr_replicates().values())
            beta = "" if t.winner is None or m != "momentum β tuned" else \
                f"{float(t.winner.param('optimizer.momentum') or 0.0):.3g}"
            rows.append([m, b, _steps(t.log2_steps()), _steps(t.log2_seconds()), lrs, beta,
                         f"{len(t.seeds)} seeds × {len(t.studies)} studies"])
    doc.table(["method", "B", "steps to target (median over studies [95%: studies and seeds])",
               f"seconds to target on {device}", "best lr per study", "β (median study)", "re-evaluated on"], rows)
    doc.para("Seconds: each run's train_seconds (training only, evaluations excluded) at its step to the target, "
             "interpolated between evaluations; a stacked run's clock is its share of its stack's, so methods "
             "trained in one stack share a time per step and differ in time only by their steps.")
    crit_rows = []
    comparisons = {c.method: c for c in nqm_overlay.compare(fit, sweep, runs)} if fit is not None else {}
    for m in sweep.methods:
        crit = scaling.measured_critical_batch_size(sweep.tuned, m)
        c = comparisons.get(m)
        if c is None:
            crit_rows.append([m, _crit(crit, max(sweep.sizes(m))), "-", "-",
                              "no NQM prediction for this method" if fit is not None else "no NQM fit"])
            continue
        ratio = f"×{c.ratio:.2g}" if c.ratio is not None else "-"
        held = f" ({_crit(c.measured, c.largest_measured)} from the checkpoint's loss)" if c.from_checkpoint else ""
        crit_rows.append([m, _crit(crit, c.largest_measured) + held, f"{_crit(c.predicted, c.largest_predicted)} "
                          f"({c.predicted_as})", ratio, c.verdict()])
    doc.heading(f"{workload}: the fitted NQM against the measurement", level=3)
    if fit is None:
        doc.para(f"No `suite nqm fit --problem {workload}` run in this experiment: nothing to overlay.")
    else:
        # the steps' scale: from the fit's checkpoint loss where it logged one, else not comparable
        scale = ((f"Its steps count from its checkpoint (val_loss {fit.checkpoint_loss:.3g}) to the target, and so do "
                  "the measured steps it is held against: each re-evaluated run's steps from its own crossing of the "
                  "checkpoint's loss to its crossing of the target (median over studies of the mean log2 over "
                  "seeds). The prediction agrees if its critical batch size is within ")
                 if fit.checkpoint_loss is not None else
                 ("Its steps count from its checkpoint to its own target, the measured ones from initialisation "
                  "(the fit logged no checkpoint loss), so their level is not the measured one; the critical batch "
                  "size has no such scale, and the prediction agrees if it is within "))
        doc.para(f"The NQM fitted to {workload} (run {fit.run_id}; {_fit_settings(fit)}) predicts each method's "
                 "steps at its best constant lr and its critical batch size, by the same definition as the measured "
                 "one (suite.critical: 2× the steps perfect scaling from the smallest batch size predicts). "
                 f"{scale}{nqm_overlay.AGREE:g}× of the measurement. Momentum is predicted, as it is measured, with β "
                 "tuned jointly with the lr; Adam is predicted as SGD preconditioned by H^(−1/2).")
    doc.table(["method", "measured critical batch size", "predicted (NQM fit)", "predicted / measured",
               "agreement"], crit_rows)
    if comparisons:
        over = []
        for c in comparisons.values():
            for b, r in sorted(c.step_ratios.items()):
                over.append([c.method, b, f"{fit.steps[_key_of(c.method)][b]:.3g}" if fit else "-",
                             f"{c.measured_steps[b]:.3g}", f"×{r:.2g}"])
        start = "from the checkpoint's loss" if all(c.from_checkpoint for c in comparisons.values()) else \
            "from initialisation"
        doc.table(["method", "B", "predicted steps", f"measured steps ({start})", "predicted / measured"], over)
    if fit is not None and (missing := nqm_overlay.left_out(fit, sweep)):
        doc.para(f"Not predicted: {', '.join(missing)} (the fit has no model of it).")


def _key_of(method: str) -> str:
    return next(k for k, m in nqm_overlay.MEASURED_AS.items() if m == method)


def _fit_settings(fit: nqm_overlay.Fit) -> str:
    keys = ("lr", "batch_size", "reference_steps", "checkpoint_fraction", "target_fraction", "target_loss", "top_k")
    return ", ".join(f"{k} {fit.params[k]}" for k in keys if k in fit.params)
