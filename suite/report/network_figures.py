"""The networks report's figures: Shallue et al.'s steps to target against the batch size (log-log,
with perfect scaling, each method's measured critical batch size and the fitted NQM's prediction),
the time to target beside it, and the performance profile across workloads."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from suite.report import scaling
from suite.report.claims import Sweep
from suite.report.figures import batch_size_axes, plt
from suite.report.nqm_overlay import MEASURED_AS, Fit
from suite.report.stats import Estimate
from suite.report.style import finish_figure, label_axes, style


def _bars(ests: Sequence[tuple[int, Estimate]]) -> tuple[list[int], list[float], list[list[float]]]:
    xs = [b for b, e in ests if e.n]
    ys = [2 ** e.mean for _, e in ests if e.n]
    lo = [2 ** e.mean - 2 ** e.low if math.isfinite(e.low) else 0.0 for _, e in ests if e.n]
    hi = [2 ** e.high - 2 ** e.mean if math.isfinite(e.high) else 0.0 for _, e in ests if e.n]
    return xs, ys, [lo, hi]


def shallue_figure(workload: str, sweep: Sweep, fit: Fit | None, device: str):
    """Left: steps to the target against B (log-log), each method's median over studies with its
    95% interval over studies and seeds, perfect scaling from SGD's smallest batch size (grey), each
    method's measured critical batch size (a vertical line), and the NQM fitted to the network
    (dotted, its predicted critical batch size marked ◆). Right: training seconds to the target."""
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(13.0, 5.2))
    colour = {m: style(i)["color"] for i, m in enumerate(sweep.methods)}
    top = 1.0
    for i, m in enumerate(sweep.methods):
        st = style(i)
        sizes = sweep.sizes(m)
        xs, ys, err = _bars([(b, sweep.tuned[(m, b)].log2_steps()) for b in sizes])
        if xs:
            ax.errorbar(xs, ys, yerr=err, capsize=3, linestyle="--" if "+" in m else "-", label=m, **st)
            top = max(top, max(ys))
        crit = scaling.measured_critical_batch_size(sweep.tuned, m)
        if crit is not None and math.isfinite(crit):
            ax.axvline(crit, color=st["color"], linestyle=(0, (4, 2)), linewidth=0.9)
            ax.annotate(f"B* {crit:.0f}", (crit, top), rotation=90, fontsize=7, color=st["color"], va="top",
                        ha="right")
        xs_t, ys_t, err_t = _bars([(b, sweep.tuned[(m, b)].log2_seconds()) for b in sizes])
        if xs_t:
            ax_t.errorbar(xs_t, ys_t, yerr=err_t, capsize=3, linestyle="--" if "+" in m else "-", label=m, **st)
    if "SGD" in sweep.methods and sweep.sizes("SGD"):
        b0 = sweep.sizes("SGD")[0]
        s0 = 2 ** sweep.tuned[("SGD", b0)].log2_steps().mean
        sizes = np.array(sweep.sizes("SGD"), dtype=float)
        ax.plot(sizes, s0 * b0 / sizes, color="0.55", linewidth=1, label="perfect scaling from SGD's smallest B")
    if fit is not None:
        for key, steps in fit.steps.items():
            m = MEASURED_AS.get(key)
            c = colour.get(m, "0.3") if m else "0.3"
            pts = sorted(steps.items())
            ax.plot([b for b, _ in pts], [s for _, s in pts], linestyle=":", color=c, linewidth=1.4,
                    label=f"NQM fit: {key}")
            crit = fit.critical.get(key, math.inf)
            if math.isfinite(crit):
                near = min(pts, key=lambda p: abs(math.log(p[0] / crit)))
                ax.plot([crit], [near[1]], marker="D", color=c, linestyle="none", markersize=6)
    batch_size_axes(ax, ax_t)
    ax.set_ylabel(f"steps to val_loss ≤ {sweep.target:g}")
    ax.set_title(f"{workload}: steps to target, each method tuned per B (dashed lines: measured B*; "
                 "◆: the NQM's B*)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax_t.set_ylabel("training seconds to the target")
    ax_t.set_title(f"{workload}: time to target on {device} (a stacked run's share of its stack)", fontsize=9)
    ax_t.legend(fontsize=7)
    finish_figure(fig, wspace=0.25)
    return fig


def profile_figure(ratios: Mapping[str, Sequence[float]]):
    """AlgoPerf's performance profile: for each method, the fraction of (workload, batch size)
    cells in which its steps are within a factor τ of the fewest any method needed, against τ."""
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    finite = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
    taus = np.geomspace(1.0, max(2.0, max(finite, default=2.0) * 1.05), 200)
    for i, (m, rs) in enumerate(ratios.items()):
        arr = np.array(rs, dtype=float)
        ax.step(taus, [(arr <= t).mean() for t in taus], where="post", label=m, color=style(i)["color"])
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    label_axes(ax, "Performance profile (AlgoPerf): steps to target, all workloads and batch sizes",
               "τ: steps over the fewest any method needed in the cell", "fraction of (workload, B) cells")
    finish_figure(fig)
    return fig
