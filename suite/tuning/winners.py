"""The tuning report: which choice wins at which batch size.

One table per problem, a row per batch size, a column per variant; each cell holds the best
value with its hyperparameters. After ``--reevaluate K`` (the default for ``steps-to-target``)
the study's top trials were re-run on K fresh seeds each and the winner is the best
re-evaluated mean, shown as mean ± std: the best tuning draw alone is biased low (the winner's
curse). Saved as Markdown and CSV; figures of the best value and the best learning rate
against the batch size; Optuna's own history and importance plots per study.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from suite.report import tables
from suite.report.style import finish_figure
from suite.specs.naming import value_text
from suite.tuning import edges, importance
from suite.tuning.labels import short_name
from suite.tuning.plan import StudyPlan
from suite.tuning.results import best_trial, best_values, counted
from suite.vocab import TRIAL_STATUS

plt = tables.plt


@dataclass
class Reeval:
    """A best configuration re-run on fresh seeds."""

    values: list[float]
    n_diverged: int = 0
    per_seed: dict[int, float | None] = field(default_factory=dict)  # fresh seed -> value (None: diverged)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def text(self) -> str:
        if not self.values:
            return f"all {self.n_diverged} diverged"
        extra = f", {self.n_diverged} diverged" if self.n_diverged else ""
        return f"{self.mean:.4g} ± {self.std:.2g}{extra}"


@dataclass
class StudySummary:
    """What one study found."""

    name: str
    problem: str
    variant: str
    batch_size: int
    n_counted: int
    n_complete: int
    n_pruned: int
    n_failed: int
    n_diverged: int
    best_value: float | None
    best_number: int | None
    best_params: dict[str, Any]
    reeval: Reeval | None = None
    n_reevaluated: int = 0  # trials re-evaluated; the winner (best_*) is the best re-evaluated mean
    reevaluated: tuple[int, ...] = ()  # their numbers
    maximize: bool = False  # the objective is a metric to maximise (e.g. final:val_acc:max)
    study_index: int = 0  # which of its cell's independent studies (``--studies R``)
    edges: tuple[Any, ...] = ()  # the winner's ends of its search space (suite.tuning.edges.Edge)

    def cell(self) -> str:
        if self.best_value is None:
            return f"— (no completed trial of {self.n_counted})"
        params = " ".join(f"{short_name(k)}={value_text(v, 3)}" for k, v in self.best_params.items())
        value = f"{self.best_value:.4g}"
        if self.reeval:
            n = len(self.reeval.values) + self.reeval.n_diverged
            value = f"{self.reeval.text} on {n} fresh seeds, tuned {self.best_value:.4g}"
        return (f"{value} ({params})" if params else value) + edges.marks(self.edges, short_name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["edges"] = [e.flag for e in self.edges]
        if self.reeval is not None:
            d["reeval"].update(mean=self.reeval.mean, std=self.reeval.std)
        return d


def summarize(study: optuna.Study, plan: StudyPlan, reevals: Mapping[int, Reeval] | None = None) -> StudySummary:
    """What a study found. With ``reevals`` (trial number -> its re-evaluation) the winner is
    the re-evaluated trial with the fewest fresh seeds that diverged (or missed), then the best
    mean on the others (the tuned best when none has a value)."""
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    reeval = None
    if reevals:
        sign = -1.0 if plan.objective.study_direction == "maximize" else 1.0
        scored = [(r.n_diverged, sign * r.mean, number) for number, r in reevals.items() if r.values]
        number = min(scored)[2] if scored else (best.number if best is not None else None)
        if number is not None:
            best = next(t for t in trials if t.number == number)
            reeval = reevals.get(number)
    return StudySummary(
        name=plan.name, problem=plan.problem, batch_size=plan.batch_size,
        # a benchmark file's experiments may tune one variant with other pinned values: the experiment tells them apart
        variant=f"{plan.section}: {plan.variant.name}" if getattr(plan, "section", None) else plan.variant.name,
        n_counted=sum(counted(t) for t in trials),
        n_complete=sum(t.state == TrialState.COMPLETE for t in trials),
        n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL and counted(t) for t in trials),
        n_diverged=sum(t.user_attrs.get(TRIAL_STATUS) == "diverged" for t in trials),
        best_value=None if best is None else float(best.value),
        best_number=None if best is None else best.number,
        best_params={} if best is None else best_values(best),
        reeval=reeval,
        n_reevaluated=len(reevals or {}), reevaluated=tuple(sorted(reevals or {})),
        maximize=plan.objective.study_direction == "maximize", study_index=plan.study_index,
    )


def _by_problem(summaries: Sequence[StudySummary]) -> dict[str, list[StudySummary]]:
    out: dict[str, list[StudySummary]] = {}
    for s in summaries:
        out.setdefault(s.problem, []).append(s)
    return out


def markdown(summaries: Sequence[StudySummary], objective_label: str) -> str:
    """One Markdown table per problem: a row per batch size, a column per variant (a cell of
    several studies: the median over them, with its interval), and the best variant per batch
    size by the report's test (:func:`winners`)."""
    parts = []
    for problem, items in _by_problem(summaries).items():
        variants = list(dict.fromkeys(s.variant for s in items))
        sizes = sorted({s.batch_size for s in items})
        cells = {(b, v): _cell([s for s in items if s.batch_size == b and s.variant == v])
                 for b in sizes for v in variants}
        lines = [f"### {problem}: {objective_label} ({'higher' if items[0].maximize else 'lower'} is better)", "",
                 "| batch size | " + " | ".join(variants) + " |",
                 "|---:|" + "---|" * len(variants)]
        for b in sizes:
            lines.append(f"| {b} | " + " | ".join(cells.get((b, v), "") for v in variants) + " |")
        if len(variants) > 1:
            found = [(b, winners(items, b)) for b in sizes]
            basis = next((w.basis for _, w in found if w.basis), "")
            lines += ["", "Best variant per batch size: " + "; ".join(f"b{b}: {w.text}" for b, w in found)
                      + f" ({basis})"]
        warned = edge_warnings(items)
        if warned:
            lines += ["", *warned]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def edge_warnings(summaries: Sequence[StudySummary]) -> list[str]:
    """One warning line per problem whose winners sit at an edge of their search space
    (:func:`suite.tuning.edges.warning`), for the table's foot and for output without the table."""
    out = []
    for items in _by_problem(summaries).values():
        flagged = [(f"b{s.batch_size} {s.variant}", s.edges) for s in items if s.edges]
        if flagged:
            out.append(edges.warning(flagged))
    return out


def _cell(studies: Sequence[StudySummary]) -> str:
    """One study's cell, or the median over a cell's studies with its interval."""
    if len(studies) <= 1:
        return studies[0].cell() if studies else ""
    est, log = _estimate(_values(studies), log=_positive(studies))
    if est.n == 0:
        return f"— (no completed trial in {len(studies)} studies)"
    show = (lambda x: f"{2 ** x:.4g}") if log else (lambda x: f"{x:.4g}")
    interval = f" [{show(est.low)}, {show(est.high)}]" if math.isfinite(est.low) and math.isfinite(est.high) else ""
    per = ", ".join(show(_estimate({0: v}, log)[0].mean) for v in _values(studies).values())
    return f"{show(est.mean)}{interval}, median of {len(studies)} studies ({per}; {est.label})"


@dataclass(frozen=True)
class Winner:
    """The best variant at a batch size, or why none is named (:func:`winners`)."""

    text: str  # the variant, or "no significant difference: A vs B"
    basis: str = ""  # how it was tested
    variant: str | None = None  # the winner, if one is named


def _values(studies: Sequence[StudySummary]) -> dict[int, dict[int, float]]:
    """study index -> fresh seed -> the value of the study's winner (its re-evaluations; without
    them its tuned best value, as one "seed")."""
    out: dict[int, dict[int, float]] = {}
    for s in studies:
        if s.reeval is not None and s.reeval.per_seed:
            out[s.study_index] = {k: v for k, v in s.reeval.per_seed.items() if v is not None}
        elif s.reeval is not None and s.reeval.values:  # re-evaluations from before their seeds were kept
            out[s.study_index] = dict(enumerate(s.reeval.values))
        elif s.reeval is None and s.best_value is not None:
            out[s.study_index] = {-1: s.best_value}
    return out


def _positive(studies: Sequence[StudySummary]) -> bool:
    """Compare on log2 (ratios) where every value is positive (steps, losses), else on differences."""
    vals = [v for d in _values(studies).values() for v in d.values()]
    return bool(vals) and all(v > 0 and math.isfinite(v) for v in vals)


StudyValues = Mapping[int, Mapping[int, float]]  # study index -> fresh seed -> value


def _estimate(values: StudyValues, log: bool, other: StudyValues | None = None) -> tuple[Any, str]:
    """(estimate, scale word) of ``values`` (or of ``values − other``: every study against every
    study, paired on seed, as the report compares methods) on the log2 scale or not."""
    from suite.report.stats import crossed_studies, study_estimate

    def tr(d: Mapping[int, Mapping[int, float]]) -> dict[int, dict[int, float]]:
        return {k: {s: math.log2(v) if log else v for s, v in vs.items() if not log or v > 0} for k, vs in d.items()}

    est = study_estimate(tr(values)) if other is None else crossed_studies(tr(values), tr(other))
    return est, "log2 ratio" if log else "difference"


def winners(items: Sequence[StudySummary], batch_size: int) -> Winner:
    """The best variant at ``batch_size`` by the report's test: each variant's value over its
    studies and fresh seeds (:func:`suite.report.stats.study_estimate`), and a winner only where
    its paired interval (on study index and fresh seed; log2 ratios where values are positive)
    against every other variant excludes "no difference"; otherwise the variant that blocks it."""
    here = [s for s in items if s.batch_size == batch_size]
    variants = list(dict.fromkeys(s.variant for s in here))
    values = {v: _values([s for s in here if s.variant == v]) for v in variants}
    values = {v: d for v, d in values.items() if d}
    if len(values) < 2:
        return Winner(next(iter(values)) if values else "no completed trial", variant=next(iter(values), None))
    maximize = here[0].maximize
    log = _positive(here)
    point = {v: _estimate(d, log)[0].mean for v, d in values.items()}
    order = sorted(values, key=lambda v: -point[v] if maximize else point[v])
    basis, blocker = "", None
    for cand in order:
        tests = {o: _estimate(values[cand], log, values[o]) for o in order if o != cand}
        ests = {o: e for o, (e, _) in tests.items()}
        scale = next(iter(tests.values()))[1]
        label = next((e.label for e in ests.values() if e.n > 1), "no interval: one value each")
        basis = (f"every study against every study, paired on fresh seed, {scale}, {label}; a winner only where "
                 "its interval against every other variant excludes no difference")
        if all((e.low > 0) if maximize else (e.high < 0) for e in ests.values()):
            return Winner(cand, basis, cand)
        if cand == order[0]:
            blocker = next((o for o, e in ests.items() if e.covers_zero), None)
    best = order[0]
    if blocker is None:
        return Winner(f"no significant winner: {best} leads, but its intervals disagree", basis)
    return Winner(f"no significant difference: {best} vs {blocker}", basis)


def _score(s: StudySummary) -> float | None:
    if s.reeval is not None and s.reeval.values:
        return s.reeval.mean
    return s.best_value


def csv_text(summaries: Sequence[StudySummary]) -> str:
    """One row per study, every tuned hyperparameter in its own column."""
    keys = list(dict.fromkeys(k for s in summaries for k in s.best_params))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["problem", "variant", "batch_size", "study_index", "best_value", "best_trial", "trials", "complete",
                "pruned", "failed", "diverged", "reeval_mean", "reeval_std", "reeval_n", "reeval_trials", *keys])
    for s in summaries:
        r = s.reeval
        w.writerow([s.problem, s.variant, s.batch_size, s.study_index, s.best_value, s.best_number, s.n_counted,
                    s.n_complete, s.n_pruned, s.n_failed, s.n_diverged, r.mean if r else "", r.std if r else "",
                    len(r.values) if r else "", s.n_reevaluated or "", *[s.best_params.get(k, "") for k in keys]])
    return buf.getvalue()


def figures(summaries: Sequence[StudySummary], objective_label: str) -> dict[str, Any]:
    """Per problem: best value against batch size per variant; best lr against batch size
    (log-log) where the lr was tuned."""
    out = {}
    for problem, items in _by_problem(summaries).items():
        variants = list(dict.fromkeys(s.variant for s in items))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for v in variants:
            pts = sorted(((s.batch_size, _score(s), s) for s in items if s.variant == v and _score(s) is not None),
                         key=lambda p: (p[0], p[1]))
            if not pts:
                continue
            sizes = sorted({b for b, _, _ in pts})
            if len(sizes) < len(pts):  # several studies per cell: the median over them
                ys = [statistics.median(y for b2, y, _ in pts if b2 == b) for b in sizes]
                ax.plot(sizes, ys, marker="o", label=f"{v} (median over studies)")
                continue
            err = [s.reeval.std if s.reeval and s.reeval.values else 0.0 for _, _, s in pts]
            ax.errorbar([b for b, _, _ in pts], [y for _, y, _ in pts], yerr=err, marker="o", capsize=3, label=v)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"best {objective_label}")
        ax.set_title(f"{problem}: tuned value per batch size")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        else:  # no study completed a trial (a failed tune): say so rather than draw an empty legend
            ax.text(0.5, 0.5, "no completed trial", transform=ax.transAxes, ha="center", va="center")
        finish_figure(fig)
        out[f"{problem}_best_value_vs_batch_size.png"] = fig

        lr_items = [s for s in items if isinstance(s.best_params.get("optimizer.lr"), float)]
        if lr_items:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for v in variants:
                pts = sorted((s.batch_size, s.best_params["optimizer.lr"]) for s in lr_items if s.variant == v)
                if pts:
                    ax.plot([b for b, _ in pts], [lr for _, lr in pts], marker="o", label=v)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch size")
            ax.set_ylabel("best learning rate")
            ax.set_title(f"{problem}: tuned learning rate per batch size")
            ax.legend(fontsize="small")
            finish_figure(fig)
            out[f"{problem}_best_lr_vs_batch_size.png"] = fig
    return out


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's optimization history and (where it can be computed: at least two completed
    trials and two parameters) hyperparameter importance plots (PED-ANOVA, without scikit-learn:
    :mod:`suite.tuning.importance`); skipped when they cannot be made."""
    import warnings

    from optuna.visualization import matplotlib as ovm

    out: dict[str, Any] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return out
    # Optuna's plots switch matplotlib to its ggplot style for good (plt.style.use); the context
    # gives every later figure of the process (the findings report's) its own style back
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore")
        try:
            out["optuna_history.png"] = ovm.plot_optimization_history(study).figure
        except Exception:  # an optional figure must not stop the report
            pass
        if _has_importances(complete):
            try:
                plot = ovm.plot_param_importances(study, evaluator=importance.evaluator())
                out["optuna_importance.png"] = plot.figure
            except Exception:
                pass
        for fig in out.values():  # texts (parameter names) the suite does not control: measured
            if fig.get_layout_engine() is None:  # one that has a layout engine is laid out when saved
                fig.tight_layout()
    return out


def study_pngs(studies: Sequence[optuna.Study]) -> list[dict[str, bytes]]:
    """Each study's :func:`study_figures` as PNG bytes, in order; from :data:`SPLIT_STUDIES` studies
    on, drawn on two processes as the report's draws are (:mod:`suite.report.split_draws`): in
    ``make bench`` 96 studies' 100 figures took 90 s one after another (profiled, load 12);
    ``suite tune --problem logistic``'s 6 studies' 12 figures take 1.0–1.3 s of reporting instead
    of 1.6–1.9 s on a quiet machine (alternated, 3 each; the child is forked, so it repeats no
    import), and gain nothing at load 8.

    Before the fork each study is copied into memory (:func:`_in_memory`): the child must not use
    the parent's storage (a database's pooled connection shared by two processes breaks both)."""
    from suite.report.split_draws import draw_results

    if len(studies) < SPLIT_STUDIES:
        return [_pngs(s) for s in studies]
    studies = [_in_memory(s) for s in studies]
    if any(_has_importances(s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) for s in studies):
        importance.load()  # imported once for both processes
    pending = iter(studies)
    return draw_results(lambda: next(pending), _pngs, len(studies))


def _in_memory(study: optuna.Study) -> optuna.Study:
    """A copy of ``study`` in Optuna's in-memory storage: its directions and its finished trials."""
    copy = optuna.create_study(directions=study.directions, study_name=study.study_name)
    copy.add_trials([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
    return copy


SPLIT_STUDIES = 2  # a single study's two figures: drawn here


def _has_importances(complete: Sequence[optuna.trial.FrozenTrial]) -> bool:
    """Whether hyperparameter importances can be computed from these completed trials."""
    return len(complete) >= 2 and len({k for t in complete for k in t.params}) >= 2


def _pngs(study: optuna.Study) -> dict[str, bytes]:
    from suite.tracking.tracker import png_bytes

    figs = study_figures(study)
    try:
        return {name: png_bytes(fig) for name, fig in figs.items()}
    finally:
        close_all(figs)


def close_all(figs: Mapping[str, Any]) -> None:
    for fig in figs.values():
        tables.close(fig)
