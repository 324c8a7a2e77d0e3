"""The report's figures (matplotlib, Agg): loss curves with bands over seeds, steps to target and
best lr against batch size with the NQM closed forms, and the steady state against α/B.

Lines get a (colour, marker, dash) style that stays distinct for any number of lines: ten
colours, then the same colours with another marker. An averaged model is drawn dashed in its
run's colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from suite.report import scaling  # noqa: E402
from suite.report.reader import RunRecord, Runs  # noqa: E402
from suite.report.style import LEGEND_ROW_IN, finish_figure, label_axes, legend_columns, style  # noqa: E402
from suite.specs.axes import varying_in  # noqa: E402

PANEL_MIN_WIDTH_IN = 6.8  # a figure of one panel is still wide enough for its title on one line
PANEL_MARGINS = {"top": 0.65, "wspace": 0.08, "hspace": 0.35}  # a suptitle above; panels share their y axis


def panels(n: int) -> tuple[Any, np.ndarray]:
    """A figure of ``n`` panels sharing their y axis, three to a row (a panel left over is
    hidden): ``(figure, axes)``, the axes a 2-d array."""
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(PANEL_MIN_WIDTH_IN, 5.2 * ncol), 3.9 * nrow), squeeze=False,
                             sharey=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def close(fig: Any) -> None:
    plt.close(fig)


def config_label(record: RunRecord, varying: Sequence[str]) -> str:
    parts = [f"{k.rpartition('.')[2]}={record.params[k]}" for k in varying if k in record.params]
    return " ".join(parts) or str(record.param("optimizer"))


def varying_keys(records: Sequence[RunRecord], skip: Sequence[str] = ("seed", "batch_size", "steps", "eval_every")
                 ) -> list[str]:
    """The params that take more than one value among ``records`` (besides ``skip``), by the rule
    run names use (:func:`suite.specs.axes.varying_in`)."""
    return varying_in([r.params for r in records], skip=skip)


def _band(runs: Runs, records: Sequence[RunRecord], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean, min and max over seeds of one metric (steps every seed evaluated)."""
    curves = [dict(runs.history(r, key)) for r in records if r.status in ("completed", "diverged")]
    curves = [c for c in curves if c]
    if not curves:
        return (np.array([]),) * 4
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    vals = np.array([[c[s] for s in steps] for c in curves], dtype=float)
    with np.errstate(invalid="ignore"):
        return np.array(steps), np.nanmean(vals, 0), np.nanmin(vals, 0), np.nanmax(vals, 0)


def from_averaging(steps: np.ndarray, *curves: np.ndarray) -> tuple[np.ndarray, ...]:
    """An averaged model's curve from where averaging starts: an averager with a start point (SWA)
    holds the initial model until then, so its leading points that equal the first one are cut,
    but the last of them (the start). A curve that moves from its first point is kept whole."""
    moved = np.flatnonzero(curves[0] != curves[0][0]) if len(steps) else np.array([], dtype=int)
    first = max(int(moved[0]) - 1, 0) if len(moved) else 0
    return (steps[first:], *(c[first:] for c in curves))


def curve_metrics(records: Sequence[RunRecord]) -> tuple[str, str, str]:
    """(metric, averaged metric, y label): the NQM's expected risk where logged, else val loss."""
    if any("theory_risk" in r.final for r in records):
        return "theory_risk", "theory_avg_risk", "expected risk (NQM closed form for the run)"
    return "val_loss", "avg_val_loss", "validation loss"


def curves_figure(runs: Runs, records: Sequence[RunRecord], title: str):
    """Loss against steps: per configuration the mean over seeds with a min–max band, its
    averaged model dashed in the same colour; one panel per batch size."""
    metric, avg_metric, ylabel = curve_metrics(records)
    sizes = sorted({r.batch_size for r in records})
    varying = varying_keys(records)
    fig, axes = panels(len(sizes))
    configs = list(dict.fromkeys(r.config(("seed", "batch_size", "steps", "eval_every")) for r in records))
    for ax, b in zip(axes.flat, sizes, strict=False):
        for i, cfg in enumerate(configs):
            group = [r for r in records if r.batch_size == b and r.config(("seed", "batch_size", "steps",
                                                                             "eval_every")) == cfg]
            if not group:
                continue
            st = style(i)
            label = config_label(group[0], varying)
            for key, dash, suffix in ((metric, "-", ""), (avg_metric, "--", " (averaged)")):
                steps, mean, lo, hi = _band(runs, group, key)
                if key == avg_metric:
                    steps, mean, lo, hi = from_averaging(steps, mean, lo, hi)
                if not len(steps):
                    continue
                every = max(1, len(steps) // 8)
                ax.plot(steps, mean, linestyle=dash, color=st["color"], marker=st["marker"], markevery=every,
                        markersize=4, linewidth=1.4, label=label + suffix)
                if len(group) > 1:
                    ax.fill_between(steps, lo, hi, color=st["color"], alpha=0.15, linewidth=0)
        ax.set_yscale("log")
        label_axes(ax, f"batch size {b}", "optimizer steps", legend_size=None)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    entries: dict[str, Any] = {}  # every configuration, whichever panel it first appears in
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    labels, handles = list(entries), list(entries.values())
    legend_in = 0.0
    if handles:
        width, height = fig.get_size_inches()
        cols = legend_columns(labels, width)
        legend_in = math.ceil(len(labels) / cols) * LEGEND_ROW_IN + 0.15
        fig.set_size_inches(width, height + legend_in)  # the legend gets room of its own below the panels
        fig.legend(handles, labels, loc="lower center", ncol=cols, fontsize=8, frameon=False)
    fig.suptitle(f"{title}: mean over seeds, band = min–max over seeds, averaged model dashed", fontsize=11)
    finish_figure(fig, bottom=0.55 + legend_in, **PANEL_MARGINS)
    return fig


def scaling_figures(sweep: Any, records: Sequence[RunRecord]):
    """(steps to target vs B with the closed forms and critical batch sizes, best lr vs B)."""
    tuned, methods = sweep.tuned, sweep.methods
    dim, noise = scaling.nqm_setup(records[0])
    fig1, ax = plt.subplots(figsize=(7.5, 5.2))
    fig2, ax2 = plt.subplots(figsize=(7.5, 4.6))
    all_sizes = sorted({b for _, b in tuned})
    fine = np.geomspace(all_sizes[0], all_sizes[-1], 12)
    for i, m in enumerate(methods):
        st = style(i)
        sizes = scaling.batch_sizes(tuned, m)
        ests = [tuned[(m, b)].log2_steps() for b in sizes]
        pts = [(b, e) for b, e in zip(sizes, ests, strict=True) if e.n]
        if pts:
            xs = [b for b, _ in pts]
            ys = [2**e.mean for _, e in pts]
            lo = [2**e.mean - 2**e.low if math.isfinite(e.low) else 0 for _, e in pts]
            hi = [2**e.high - 2**e.mean if math.isfinite(e.high) else 0 for _, e in pts]
            dash = "--" if "+" in m else "-"
            ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, linestyle=dash, label=f"{m} (measured)", **st)
        theory = [scaling.closed_form_steps(m, b, dim, noise, sweep.target) for b in fine]
        if all(t is not None for t in theory):
            ax.plot(fine, [t[0] for t in theory], linestyle=":", color=st["color"], linewidth=1.3,
                    label=f"{m} (NQM closed form)")
            crit = scaling.predicted_critical_batch_size(m, all_sizes[0], dim, noise, sweep.target)
            if crit is not None and all_sizes[0] <= crit <= all_sizes[-1] * 4:
                ax.axvline(crit, color=st["color"], linestyle=(0, (1, 3)), linewidth=1)
                ax.annotate(f"B* ≈ {crit:.0f}", (crit, max(ys) if pts else 1.0),
                            rotation=90, fontsize=7, color=st["color"], va="top", ha="right")
        lrs = {b: tuned[(m, b)].lr_replicates() for b in sizes}
        geo = [2 ** np.mean(np.log2(list(v.values()))) for v in lrs.values()]
        spread = [(max(0.0, g - min(v.values())), max(0.0, max(v.values()) - g))
                  for g, v in zip(geo, lrs.values(), strict=True)]
        ax2.errorbar(sizes, geo, yerr=np.array(spread).T, capsize=3, linestyle="--" if "+" in m else "-",
                     label=m, **st)
    ax.plot(fine, [dim / (2 * sweep.target * b) for b in fine], color="0.6",
            linewidth=1, label="lower bound d/(2·L*·B)")
    batch_size_axes(ax, ax2)
    ax.set_ylabel(f"steps to expected risk {sweep.target:g}")
    ax.set_title(f"Steps to target, each method at its best lr (NQM d={dim}); B* = predicted critical batch size "
                 "(2× perfect scaling)",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax2.axhline(2.0, color="0.5", linestyle=":", linewidth=1)
    ax2.annotate("SGD stability cap 2/h_max", (all_sizes[0], 2.0), fontsize=7, color="0.4", va="bottom")
    ax2.set_ylabel("best lr (geometric mean, min–max bars)")
    ax2.set_title("Best learning rate against batch size (bars: over seeds, studies or top trials)", fontsize=10)
    ax2.legend(fontsize=7)
    finish_figure(fig1)
    finish_figure(fig2, left=1.0)
    return fig1, fig2


def batch_size_axes(*axes: Any) -> None:
    """Log-log axes against the batch size (log2 x axis), with a light grid."""
    for a in axes:
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("batch size B")
        a.grid(alpha=0.3, which="both", linewidth=0.5)


def steady_state_figure(runs: Runs, records: Sequence[RunRecord]):
    """Measured steady-state risk (mean of the last half of val_loss) against the closed form
    Σ αc/(2B(2−αh)), one marker per (lr, B), the line y = x."""
    from suite.report.stats import STEADY_TAIL, tail_mean
    from suite.theory import sgd_steady_risk

    fig, ax = plt.subplots(figsize=(6, 5))
    lrs = sorted({float(r.param("optimizer.lr")) for r in records})
    pts_all = []
    for i, lr in enumerate(lrs):
        st = style(i)
        xs, ys = [], []
        for b in sorted({r.batch_size for r in records}):
            group = [r for r in records if float(r.param("optimizer.lr")) == lr and r.batch_size == b
                     and r.status == "completed"]
            vals = [v for v in (tail_mean(runs.history(r, "val_loss"), STEADY_TAIL) for r in group) if v]
            if not vals:
                continue
            dim, noise = scaling.nqm_setup(group[0])
            h = 1.0 / np.arange(1, dim + 1)
            xs.append(float(sgd_steady_risk(lr, h, noise * h, b).sum()))
            ys.append(float(np.mean(vals)))
        ax.plot(xs, ys, linestyle="none", markersize=7, label=f"lr {lr:g}", **st)
        pts_all += xs + ys
    if pts_all:
        lim = [min(pts_all) / 1.5, max(pts_all) * 1.5]
        ax.plot(lim, lim, color="0.5", linewidth=1, label="measured = closed form")
    ax.set_xscale("log")
    ax.set_yscale("log")
    label_axes(ax, "Steady state of constant-lr SGD (NQM): ∝ α/B", "closed-form steady-state risk Σ αc/(2B(2−αh))",
               "measured risk (mean of the last half)")
    finish_figure(fig)
    return fig


def best_curves_figure(runs: Runs, sweep: Any):
    """Per method, the expected risk against steps at its best lr, one line per batch size
    (mean over seeds with a min–max band)."""
    methods = sweep.methods
    fig, axes = panels(len(methods))
    by_key: dict[tuple, list[RunRecord]] = {}
    for r in sweep.records:
        for method, _ in scaling.series_of(r):
            by_key.setdefault((method, r.batch_size, float(r.param("optimizer.lr"))), []).append(r)
    for ax, m in zip(axes.flat, methods, strict=False):
        key = scaling.AVG_RISK if "+" in m else scaling.RISK
        for i, b in enumerate(scaling.batch_sizes(sweep.tuned, m)):
            lrs = list(sweep.tuned[(m, b)].best_lrs().values())
            lr = max(set(lrs), key=lrs.count)
            steps, mean, lo, hi = _band(runs, by_key.get((m, b, lr), []), key)
            if not len(steps):
                continue
            st = style(i)
            ax.plot(steps, mean, color=st["color"], marker=st["marker"], markevery=max(1, len(steps) // 8),
                    markersize=4, linewidth=1.4, label=f"B={b}, lr {lr:.3g}")
            ax.fill_between(steps, lo, hi, color=st["color"], alpha=0.15, linewidth=0)
        ax.axhline(sweep.target, color="0.5", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xscale("log")
        label_axes(ax, m, "optimizer steps", legend_size=7)
    axes[0, 0].set_ylabel("expected risk")
    fig.suptitle("Each method at its best lr per batch size (dotted: the target)", fontsize=11)
    finish_figure(fig, **PANEL_MARGINS)
    return fig
