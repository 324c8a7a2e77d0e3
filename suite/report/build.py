"""Assemble the report of one experiment: claims, scaling, steady state, then each section with
its table, its paired comparisons and its curves."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from suite.errors import ReportError
from suite.report import claims, figures, lecture_claims, network_claims, networks, power, power_nqm, protocol, scaling
from suite.report.document import Document, Link
from suite.report.optimum import optimum_loss
from suite.report.reader import RunRecord, Runs
from suite.report.score import Score
from suite.report.stats import mean_interval, paired_difference
from suite.tuning import edges
from suite.vocab import TAG_SECTION, TAG_WINNER

TAG_VALUE_MAX = 5000  # MLflow keeps tag values up to 8000 characters
STATUS_ORDER = ("completed", "diverged", "stopped", "failed", "interrupted")
CONFIG_DROP = ("seed",)


def build(runs: Runs, descriptions: dict[str, str] | None = None, by: Score | None = None) -> Document:
    """The whole report as a :class:`Document`; ``by``: what each section's paired comparisons
    compare (default: the final val loss, lower is better)."""
    descriptions, by = descriptions or {}, by or Score()
    if network_claims.is_networks(runs):  # a scaling study on networks: its own report
        return networks.build(runs, descriptions)
    doc = Document(f"sgd-suite report: {runs.experiment}")
    counts: dict[str, int] = {}
    for r in runs.records:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = [s for s in STATUS_ORDER if s in counts] + [s for s in counts if s not in STATUS_ORDER]
    status = ", ".join(f"{counts[s]} {s}" for s in order)
    reevals = sum(r.trial is not None for r in runs.records)
    of_which = f"; {reevals} of them re-evaluate tuned trials on fresh seeds" if reevals else ""
    doc.para(f"MLflow experiment {runs.experiment!r} at {runs.tracking_uri}: {len(runs.records)} runs "
             f"({status}{of_which}) in {len(runs.sections)} experiments. Generated {time.strftime('%Y-%m-%d %H:%M')}.")
    doc.para("Intervals are 95% t intervals over seeds, except in tuned experiments with several independent "
             "studies per cell: there a cell's value is the median over studies of each study's winner's mean on "
             "the fresh seeds, and its interval a 95% bootstrap over studies and seeds (2000 resamples of the "
             "studies, then of the seeds within each), so it covers the tuning too; with one study the interval "
             "covers the seeds only. Variants are compared paired on the same seeds: the difference and its "
             "interval; two tuned methods every study against every study, the interval over the seeds of the "
             "best studies' difference ± the larger of the two methods' spreads over studies (tuning error is "
             "one-sided: a tuned cell never beats its optimum, so the interval is centred on the best studies); "
             "where the interval covers 0 the report says 'no significant "
             "difference' and names no winner. A claim that rests on k cells reads each at level 1 − 0.05/k "
             "(Bonferroni).")

    rows = lecture_claims.evaluate(runs)
    powers = power.powers(lecture_claims.evaluate, runs)
    closed = power_nqm.closed_form_powers(runs, rows)
    power.summary_section(doc, rows, power.summary(rows, powers, closed))
    doc.contents()
    doc.heading("The lecture's claims")
    sweep = claims.Sweep(runs)
    theory = {**power_nqm.closed_form(runs, sweep), **lecture_claims.closed_form(runs)}
    doc.para("Each verdict is computed from the runs by the rule in its row; none is written by hand. "
             "Closed form: the same rule applied to the NQM closed form instead of the runs (each tuned cell at "
             "its exact optimum, read as the runs read their steps; no spread), and whether it agrees with the "
             "measured verdict; '—' where the claim has no closed form here.")
    doc.para(power.HOW)
    doc.table(["claim", "experiment", "its MLflow runs", "measured", "verdict", "closed form", "power", "rule"],
              [[c.claim, _experiment_cell(c, runs, sweep), _runs_cell(c, runs), c.measured, c.verdict,
                _theory_cell(c, theory.get(c.claim)), power.cell(p, closed.get(i)), c.rule]
               for i, (c, p) in enumerate(zip(rows, powers, strict=True))])

    found = protocol.study_edges(runs.records, {t.winner.study: t.winner for t in sweep.tuned.values() if t.winner})
    if sweep.tuned:
        _scaling_section(doc, runs, sweep, found)
    if any(r.trial is not None for r in runs.records):
        protocol.section(doc, runs.records, found)
    steady = [r for r in runs.section("steady_state") if r.status == "completed"]
    if steady:
        doc.heading("Steady state against α/B")
        doc.figure(figures.steady_state_figure(runs, steady), "steady_state",
                   "Measured steady-state risk of constant-lr SGD against the NQM closed form (one marker per lr and "
                   "batch size; on the line = as predicted)")

    for section in runs.sections:
        if section.startswith(scaling.SCALING_PREFIX):
            continue
        _section(doc, runs, section, descriptions.get(section, ""), by)
    return doc


SCALING_HEADING = "Batch-size scaling on the NQM, each method tuned"


def _claim_sections(row: claims.ClaimRow, runs: Runs) -> list[str]:
    """The experiments (sections) a claim's row reads: those its experiment column names."""
    named = re.findall(r"[\w*]+", row.experiment)
    out = [s for s in runs.sections if s in named]
    if any(w.endswith("*") for w in named):
        out += [s for s in runs.sections if any(s.startswith(w[:-1]) for w in named if w.endswith("*"))]
    return list(dict.fromkeys(out))


def _experiment_cell(row: claims.ClaimRow, runs: Runs, sweep: claims.Sweep) -> str | Link:
    """The claim's experiment, linked to its section of the report where it has one."""
    sections = _claim_sections(row, runs)
    if not sections:
        return row.experiment
    if sections[0].startswith(scaling.SCALING_PREFIX):
        return Link(row.experiment, SCALING_HEADING) if sweep.tuned else row.experiment
    return Link(row.experiment, sections[0])


def _runs_cell(row: claims.ClaimRow, runs: Runs) -> str:
    """The claim's runs as an MLflow search filter (the runs table's search box), and how many."""
    sections = _claim_sections(row, runs)
    if not sections:
        return "—"
    n = sum(len(runs.section(s)) for s in sections)
    if len(sections) == 1:
        return f"tags.`{TAG_SECTION}` = '{sections[0]}' ({n} run{'s' * (n != 1)})"
    prefix = os.path.commonprefix(sections)  # MLflow's search has no OR: the sections' common prefix
    return f"tags.`{TAG_SECTION}` LIKE '{prefix}%' ({n} runs of {', '.join(sections)})"


def _theory_cell(measured: claims.ClaimRow, theory: claims.ClaimRow | None) -> str:
    """The closed form's verdict on a claim, and whether the measurement agrees with it."""
    if theory is None:
        return "—"
    if theory.verdict == measured.verdict:
        return f"{theory.verdict} (agrees)"
    return f"{theory.verdict}: disagrees with the measured verdict ({theory.measured})"


def _scaling_section(doc: Document, runs: Runs, sweep: claims.Sweep, found: dict[str, tuple]) -> None:
    doc.heading(SCALING_HEADING)
    studies = any(t.from_study for t in sweep.tuned.values())
    most = max((len(t.studies) for t in sweep.tuned.values()), default=0)
    count = f"{most} independent studies each, the median over them" if most > 1 else "one study each"
    how = (f"each method tuned by Optuna at each batch size ({count}); a study's winner is the re-evaluated "
           "top trial with the fewest fresh seeds that missed the target, then the fewest mean steps on them (the "
           "trial its tuning session named), and its steps are those re-runs'"
           if studies else "at the best lr of each method, batch size and seed (an lr grid)")
    doc.para(f"Steps for the expected risk to reach {sweep.target:g} (theory_risk; theory_avg_risk for an "
             f"averaged model), {how}. Dotted: the NQM closed form's exact optimum (the fewest steps over the "
             "hyperparameters the method tunes); vertical dotted lines: its critical batch size B*, where the steps "
             "are twice what perfect scaling from the smallest batch size predicts (the same definition as the "
             "measured one in the claims table).")
    fig_steps, fig_lr = figures.scaling_figures(sweep, sweep.records)
    doc.figure(fig_steps, "scaling_steps", "Steps to target against batch size (log-log), measured and closed form")
    doc.figure(fig_lr, "scaling_best_lr", "Best learning rate against batch size, its spread over seeds or studies")
    table = []
    for m in sweep.methods:
        for b in sweep.sizes(m):
            t = sweep.tuned[(m, b)]
            est = t.log2_steps()
            steps = "not reached" if est.n == 0 else (
                f"{2 ** est.mean:.0f}" + (f" [{2 ** est.low:.0f}, {2 ** est.high:.0f}]" if est.n > 1 else ""))
            steps += f" ({est.label})" if est.n > 1 else ""
            lrs = ", ".join(f"{v:.3g}" for v in t.lr_replicates().values())
            tried = (f"{len(t.seeds)} fresh seeds" + (f" × {len(t.studies)} studies" if len(t.studies) > 1 else "")
                     if t.from_study else ", ".join(f"{v:.3g}" for v in t.lrs))
            lrs += edges.marks(found.get(t.winner.study, ())) if t.winner else ""
            table.append([m, b, steps, lrs, tried, *_optimum_cells(sweep, t)])
    best_lr = ("best lr: per study's winner (several studies), else the winner, then the other re-evaluated trials"
               if studies else "best lr per seed")
    doc.table(["method", "batch size", "steps to target (95% interval; what it covers)", best_lr,
               "re-evaluated on" if studies else "lrs tried", *OPTIMUM_COLUMNS], table)
    doc.para(OPTIMUM_NOTE)
    if (note := _coverage_note(sweep)) is not None:
        doc.para(note)
    if studies:
        doc.para("Each cell's space, trials, budget, studies and seeds, and the winners at an edge of their search "
                 "space (⚠): the Tuning protocol below.")
    doc.figure(figures.best_curves_figure(runs, sweep), "scaling_curves",
               "Expected risk against steps at the best lr of each method and batch size (band: min–max over seeds)")


OPTIMUM_COLUMNS = ["exact optimum: steps (lr, β)", "read as the runs", "regret"]
OPTIMUM_NOTE = ("Exact optimum: the fewest steps for the expected risk (E θ₀² = 1) to reach the target, minimised "
                "over the hyperparameters the method tunes (the lr; for 'β tuned' the lr and β), from the exact "
                "moment recursion (suite.theory.optimum), in whole steps. Read as the runs: the same optimum's "
                "expected risk sampled at the cell's evaluation steps and interpolated log-linearly, as each run's "
                "steps are (suite.report.scaling.reference): the value a cell is held against. Regret: the cell's "
                "steps over that (1 = the tuning found the optimum; each run starts from its own θ₀, so a cell can "
                "come out below 1).")


def _optimum_cells(sweep: claims.Sweep, tuned: scaling.Tuned) -> list[str]:
    """A tuned cell's exact optimum, that optimum read as its runs read their steps, and its regret
    (:func:`suite.report.scaling.regret`); '-' without a closed form."""
    dim, noise = scaling.nqm_setup(sweep.records[0])
    best = scaling.closed_form_optimum(tuned.method, tuned.batch_size, dim, noise, sweep.target)
    ref = scaling.reference(tuned, dim, noise, sweep.target)
    reg = scaling.regret(tuned, dim, noise, sweep.target)
    if best is None or ref is None or reg is None:
        return ["-", "-", "-"]
    beta = f", β={best.momentum:.3g}" if best.momentum else ""
    return [f"{best.steps:.0f} (lr={best.lr:.3g}{beta})", f"{ref.steps:.1f}",
            f"×{reg:.2f}" if math.isfinite(reg) else "not reached"]


def _coverage_note(sweep: claims.Sweep) -> str | None:
    """The closed form against the paired method/method intervals (:func:`suite.report.scaling.coverage`)."""
    dim, noise = scaling.nqm_setup(sweep.records[0])
    found = scaling.coverage(sweep.tuned, dim, noise, sweep.target)
    if found is None:
        return None
    inside, total, outside = found
    misses = "; ".join(outside)
    return (f"Theory against measurement: the closed-form ratio of two methods' steps (each read as the runs) lies "
            f"inside {inside} of the {total} paired 95% intervals that compare two methods with a closed form at "
            f"one batch size ({inside / total:.0%})" + (f"; outside: {misses}." if misses else "."))


def _configs(records: Sequence[RunRecord]) -> dict[tuple, list[RunRecord]]:
    out: dict[tuple, list[RunRecord]] = {}
    for r in records:
        out.setdefault(r.config(CONFIG_DROP), []).append(r)
    return out


def _pm(values: list[float]) -> str:
    est = mean_interval(values)
    if est.n == 0:
        return "-"
    sd = math.sqrt(sum((v - est.mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{est.mean:.4g} ± {sd:.2g}"


def _section(doc: Document, runs: Runs, section: str, description: str, by: Score) -> None:
    records = runs.section(section)
    doc.heading(section)
    if description:
        doc.para(description)
    varying = figures.varying_keys(records)
    groups = _configs(records)
    table = []
    for cfg_records in groups.values():
        r0 = cfg_records[0]
        done = [r for r in cfg_records if r.status == "completed"]
        val = [r.final["val_loss"] for r in done if "val_loss" in r.final]
        avg = [r.final["avg_val_loss"] for r in done if "avg_val_loss" in r.final]
        excess = [r.final["val_loss"] - opt for r in done if "val_loss" in r.final
                  and (opt := optimum_loss(r)) is not None]
        dist = [r.final["dist_to_opt"] for r in done if "dist_to_opt" in r.final]
        table.append([figures.config_label(r0, varying), r0.batch_size, len(cfg_records),
                      sum(r.status == "diverged" for r in cfg_records), _pm(val), _pm(avg), _pm(excess), _pm(dist)])
        if by.metric != "val_loss":
            table[-1] += [_pm([r.final[k] for r in done if k in r.final]) for k in (by.metric, by.averaged)]
    other = [f"final {by.metric} (mean ± sd)", f"averaged {by.metric}"] if by.metric != "val_loss" else []
    doc.table(["configuration", "batch", "seeds", "diverged", "final val loss (mean ± sd)", "averaged model",
               "excess over the optimum's loss", "distance to optimum", *other], table)
    lines = _comparison_lines(records, varying, by)
    doc.bullets(lines)
    doc.tags.update({f"{TAG_WINNER}.{section}.b{line.split(':')[0].split()[1]}": line.split(": ", 1)[1][:TAG_VALUE_MAX]
                     for line in lines})
    doc.figure(figures.curves_figure(runs, records, section), f"curves_{section}",
               f"{section}: loss against steps (mean over seeds, min–max band; averaged model dashed)")


def _comparison_lines(records: Sequence[RunRecord], varying: list[str], by: Score) -> list[str]:
    """Per batch size: the best configuration by ``by`` paired on seeds against each other one."""
    lines = []
    for b in sorted({r.batch_size for r in records}):
        groups = [g for g in _configs([r for r in records if r.batch_size == b]).values()]
        if len(groups) < 2:
            continue
        scored = []
        for g in groups:
            vals = {r.seed: by.of_run(r.final, r.status) for r in g}
            finite = [v for v in vals.values() if math.isfinite(v)]
            if finite:
                scored.append((sum(finite) / len(finite), g, vals))
        if len(scored) < 2:
            continue
        scored.sort(key=lambda t: t[0])
        _, best, best_vals = scored[0]
        label = figures.config_label(best[0], varying)
        diffs = [(figures.config_label(g[0], varying), paired_difference(vals, best_vals)) for _, g, vals in scored[1:]]
        best_diverged = any(math.isinf(v) for v in best_vals.values())
        winner = not best_diverged and all(d.n >= 2 and d.low > 0 for _, d in diffs)
        other, d = diffs[0]
        what = "" if by.metric == "val_loss" else f" in {by.label}"
        # d is of signed scores (lower better): other − best for a min metric, best − other for max
        first, second = (other, label) if by.direction == "min" else (label, other)
        detail = f"{first} − {second}{what}: {d.text('.3g', signed=True)} (paired over {d.n} seeds)"
        lines.append(f"batch {b}: " + (f"winner {label}; next best {detail}" if winner
                                        else f"no significant difference between {label} and {other}: {detail}"))
    return lines


def check_metric(runs: Runs, by: Score | None) -> None:
    """Refuse a ``--metric`` that none of the experiment's runs logged (one line listing those
    they did), before anything is written."""
    logged = {k for r in runs.records for k in r.final}
    if by is not None and logged and not {by.metric, by.averaged} & logged:
        raise ReportError(f"--metric {by.metric!r}: the runs of this experiment log no such metric; they log "
                          f"{', '.join(sorted(logged))}")


def write(runs: Runs, out_dir: Path, descriptions: dict[str, str] | None = None,
          by: Score | None = None) -> tuple[Path, Path]:
    """Build the report and write report.html + report.md into ``out_dir``."""
    return build(runs, descriptions, by).write(out_dir)


def log_on_parent(runs: Runs, out_dir: Path, tags: dict[str, str] | None = None) -> str | None:
    """Log report.html, report.md and its figures on the experiment's latest grid parent run, and
    ``tags`` (the report's findings, :attr:`Document.tags`: each claim's verdict and each paired
    comparison's winner) on it, so that the MLflow UI shows them without the report."""
    if runs.parent_run_id is None or runs.source is None:
        return None
    if tags:
        runs.set_tags(runs.parent_run_id, tags)
    files = [(out_dir / "report.html", "report"), (out_dir / "report.md", "report")]
    files += [(f, (Path("report/report_files") / f.parent.relative_to(out_dir / "report_files")).as_posix())
              for f in sorted((out_dir / "report_files").rglob("*")) if f.is_file()]
    runs.log_files(runs.parent_run_id, files)
    return runs.parent_run_id


def write_report(experiment: str, tracking_uri: str | None, out_dir: str | Path, *,
                 benchmark: str | Path | None = None, log: bool = True, by: Score | None = None,
                 studies: dict[str, list[str]] | None = None, echo: Callable[[str], None] | None = None) -> Path:
    """Write ``report.html`` and ``report.md`` for MLflow experiment ``experiment`` into
    ``out_dir`` and return the HTML's path; with ``log``, also log them as artifacts
    (``report/``) on the experiment's latest grid parent run (else its latest tuning run).

    ``benchmark`` (a benchmark file) restricts the report to that file's runs and sections and
    adds their descriptions, and ``studies`` (section -> Optuna study names: its tuned
    experiments', :func:`suite.api.tuning.study_names`) to those studies; ``by``: what the
    paired comparisons compare; ``echo`` is handed the one-line claims summary (verdict counts, the
    claims below the target power). Raises :class:`suite.errors.SuiteError` for an unknown or empty
    experiment."""
    from suite.report.reader import read_runs

    sections, descriptions = None, None
    if benchmark is not None:
        from suite.registry import get_registry
        from suite.specs import benchfile

        bench = benchfile.load(benchmark, get_registry())
        sections = {s.name: [spec.hash for spec in s.specs] for s in bench.sections if s.tune is None}
        descriptions = {s.name: s.description for s in bench.sections}
        studies = studies or {}
    runs = read_runs(experiment, tracking_uri, sections=sections, studies=studies)
    check_metric(runs, by)
    out = Path(out_dir)
    doc = build(runs, descriptions, by)
    page, _ = doc.write(out)
    if echo is not None and doc.summary:
        echo(doc.summary)
    if log:
        log_on_parent(runs, out, doc.tags)
    return page
