"""Reports: figures and terminal summaries, from engine results or from MLflow."""

from __future__ import annotations

import csv
import io
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import matplotlib

from suite.report.score import Score

if "ipykernel" not in sys.modules:  # a notebook keeps its inline backend; elsewhere no display is needed
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from suite.report.style import finish_figure  # noqa: E402


def close(fig: Any) -> None:
    plt.close(fig)


def run_figure(result: Any):
    """The lecture's figure: train, validation and averaged-validation loss against steps,
    above the learning rate against steps."""
    steps = [s for s, _ in result.history]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss"), ("avg_val_loss", "averaged val loss")):
        pts = [(s, m[key]) for s, m in result.history if key in m]
        if pts:
            ax_loss.plot([s for s, _ in pts], [v for _, v in pts], label=label)
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_loss.set_title(f"{result.spec.name} ({result.status})")
    ax_lr.plot(steps, [m["lr"] for _, m in result.history])
    ax_lr.set_xlabel("optimizer steps")
    ax_lr.set_ylabel("learning rate")
    finish_figure(fig, hspace=0.12)
    return fig


def param_lines(final_params: dict[str, dict[str, list]]) -> list[str]:
    """``w0: true=… learned=… averaged=…`` lines, as the lecture prints them."""
    learned = final_params.get("learned", {})
    true = final_params.get("true")
    if not true:
        return []
    lines = []
    for key, true_values in true.items():
        for i, t in enumerate(true_values):
            name = (f"w{i}" if key == "weight" else f"{key}[{i}]") if len(true_values) > 1 or key == "weight" else key
            parts = [f"true={t:.4f}"]
            if key in learned:
                parts.append(f"learned={learned[key][i]:.4f}")
            if "averaged" in final_params and key in final_params["averaged"]:
                parts.append(f"averaged={final_params['averaged'][key][i]:.4f}")
            lines.append(f"  {name}: " + "  ".join(parts))
    return lines


def run_summary(result: Any) -> list[str]:
    """Terminal summary of one finished run."""
    spec = result.spec
    lines = [f"run {spec.name} [{spec.hash}]: {result.status} in {result.seconds:.1f} s"]
    if result.reason:
        lines.append(f"  reason: {result.reason}")
    final = result.final
    keys = ("train_loss", "val_loss", "avg_val_loss", "dist_to_opt", "avg_dist_to_opt", "theory_risk")
    shown = [k for k in keys if k in final]
    if shown:
        lines.append("  final " + "  ".join(f"{k}={final[k]:.6f}" for k in shown))
    pl = param_lines(result.final_params)
    if pl:
        lines.append("  true vs learned parameters:")
        lines.extend(pl)
    return lines


# -- grid summaries ---------------------------------------------------------------------------
@dataclass
class GridRun:
    """One run of a grid as MLflow holds it (fresh or done by an earlier invocation)."""

    section: str
    spec: Any
    status: str
    val_loss: float | None = None
    avg_val_loss: float | None = None
    reason: str = ""
    run_id: str = ""
    curve: list[tuple[int, float]] = field(default_factory=list)
    steps_to_target: float | None = None  # with a target (spec.target): the first step at it; None if not reached
    final: dict[str, float] = field(default_factory=dict)  # every final metric (what --metric may compare by)


@dataclass
class ConfigStats:
    """One configuration (all its seeds) of one section."""

    section: str
    label: str
    variant: str
    batch_size: int
    rows: list[GridRun]
    by: Score = field(default_factory=Score)  # what the configurations are compared by

    def _values(self, key: str) -> list[float]:
        vals = [getattr(r, key, None) if key in GridRun.__dataclass_fields__ else r.final.get(key)
                for r in self.rows if r.status == "completed"]
        return [float(v) for v in vals if v is not None and math.isfinite(float(v))]

    def stat(self, key: str) -> tuple[float, float] | None:
        vals = self._values(key)
        if not vals:
            return None
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        return mean, std

    def target_cell(self) -> str:
        """Steps to the target over the seeds that reached it (mean ± std), and how many did;
        empty without a target."""
        if self.rows[0].spec.target is None:
            return ""
        done = [r for r in self.rows if r.status == "completed"]
        stat = self.stat("steps_to_target")
        reached = len(self._values("steps_to_target"))
        if stat is None:
            return "not reached"
        text = f"{stat[0]:.4g} ± {stat[1]:.2g}"
        return text if reached == len(done) else f"{text} ({reached}/{len(done)} reached)"

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.status == status)

    @property
    def score(self) -> tuple[float, str] | None:
        """The configuration's best mean final value of :attr:`by` (its model's or its averaged
        model's), signed (lower is better; see :mod:`suite.report.score`), and which it was."""
        cands = [(self.by.signed(s[0]), name)
                 for name, s in (("last", self.stat(self.by.metric)), ("averaged", self.stat(self.by.averaged)))
                 if s is not None]
        return min(cands) if cands else None


def _short(key: str, value: Any) -> str:
    name = key.rpartition(".")[2]
    return f"{name}={value}" if "." in key else str(value)


def config_stats(rows: list[GridRun], by: Score | None = None) -> list[ConfigStats]:
    """Group rows by section and configuration (everything but the seed), in first-seen order;
    ``by``: what they are compared by (default: the final val loss, lower is better).

    A configuration's label names only what varies within its section; its *variant* drops the
    batch size and whatever is tied to it (a key with one value per batch size, e.g. an lr tied
    to the batch size), so one variant can be followed across batch sizes."""
    from suite.specs.axes import config_key, varying_keys

    out: list[ConfigStats] = []
    for section in dict.fromkeys(r.section for r in rows):
        srows = [r for r in rows if r.section == section]
        varying = varying_keys(r.spec for r in srows)
        flats = [r.spec.flat_params() for r in srows]
        sizes = {f["batch_size"] for f in flats}
        tied = {
            k for k in varying if k != "batch_size"
            and all(len({repr(f.get(k, "-")) for f in flats if f["batch_size"] == b}) == 1 for b in sizes)
        }
        groups: dict[str, list[GridRun]] = {}
        for r in srows:
            groups.setdefault(config_key(r.spec), []).append(r)
        for group in groups.values():
            flat = group[0].spec.flat_params()
            label = " ".join(_short(k, flat[k]) for k in varying if k != "batch_size" and k in flat)
            variant = " ".join(_short(k, flat[k]) for k in varying if k != "batch_size" and k not in tied and k in flat)
            out.append(ConfigStats(section, label or group[0].spec.name, variant or "all", group[0].spec.batch_size,
                                   group, by or Score()))
    return out


def _pm(stat: tuple[float, float] | None) -> str:
    return "" if stat is None else f"{stat[0]:.4g} ± {stat[1]:.2g}"


TABLE_HEADER = ["section", "configuration", "batch_size", "seeds", "diverged", "failed",
                "val_loss mean", "val_loss std", "avg_val_loss mean", "avg_val_loss std"]


TARGET_HEADER = ["steps_to_target mean", "steps_to_target std", "reached"]


def _with_target(stats: list[ConfigStats]) -> bool:
    return any(c.rows[0].spec.target is not None for c in stats)


def _other_metric(stats: list[ConfigStats]) -> Score | None:
    """The compared metric where it is not the val loss the tables always show."""
    by = stats[0].by if stats else Score()
    return None if by.metric == "val_loss" else by


def table_rows(stats: list[ConfigStats]) -> list[list[Any]]:
    """The summary table (one row per configuration), as plain values."""
    rows = []
    for c in stats:
        v, a = c.stat("val_loss"), c.stat("avg_val_loss")
        rows.append([c.section, c.label, c.batch_size, len(c.rows), c.count("diverged"),
                     c.count("failed") + c.count("interrupted"),
                     *(v if v else ("", "")), *(a if a else ("", ""))])
        if _with_target(stats):
            t = c.stat("steps_to_target")
            rows[-1] += [*(t if t else ("", "")), len(c._values("steps_to_target"))]
        if by := _other_metric(stats):
            m, a = c.stat(by.metric), c.stat(by.averaged)
            rows[-1] += [*(m if m else ("", "")), *(a if a else ("", ""))]
    return rows


def _metric_header(stats: list[ConfigStats]) -> list[str]:
    by = _other_metric(stats)
    return [f"{by.metric} mean", f"{by.metric} std", f"{by.averaged} mean", f"{by.averaged} std"] if by else []


def table_csv(stats: list[ConfigStats]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(TABLE_HEADER + (TARGET_HEADER if _with_target(stats) else []) + _metric_header(stats))
    w.writerows(table_rows(stats))
    return buf.getvalue()


def table_markdown(stats: list[ConfigStats]) -> str:
    target = _with_target(stats)
    head = ["section", "configuration", "batch", "seeds", "final val loss", "averaged model", "diverged", "failed"]
    head += ["steps to target"] if target else []
    by = _other_metric(stats)
    head += [f"final {by.metric}", f"averaged {by.metric}"] if by else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in stats:
        cells = [c.section, c.label, c.batch_size, len(c.rows), _pm(c.stat("val_loss")), _pm(c.stat("avg_val_loss")),
                 c.count("diverged"), c.count("failed") + c.count("interrupted")]
        cells += [c.target_cell()] if target else []
        cells += [_pm(c.stat(by.metric)), _pm(c.stat(by.averaged))] if by else []
        lines.append("| " + " | ".join(str(x).replace("|", "/") for x in cells) + " |")
    return "\n".join(lines) + "\n"


def table_text(stats: list[ConfigStats]) -> list[str]:
    """The terminal table: mean ± std over seeds of the final val loss and the averaged model's."""
    target = _with_target(stats)
    by = _other_metric(stats)
    head = ["configuration", "batch", "seeds", "final val loss", "averaged model"]
    head += ["steps to target"] if target else []
    head += [f"final {by.metric}", f"averaged {by.metric}", "notes"] if by else ["notes"]
    lines: list[str] = []
    for section in dict.fromkeys(c.section for c in stats):
        body = []
        for c in (c for c in stats if c.section == section):
            notes = ", ".join(f"{c.count(s)} {s}" for s in ("diverged", "failed", "interrupted") if c.count(s))
            body.append([c.label, str(c.batch_size), str(len(c.rows)), _pm(c.stat("val_loss")) or "-",
                         _pm(c.stat("avg_val_loss")) or "-", *([c.target_cell() or "-"] if target else []),
                         *([_pm(c.stat(by.metric)) or "-", _pm(c.stat(by.averaged)) or "-"] if by else []), notes])
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines.append(f"== {section}")
        lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
        lines.extend("  " + "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in body)
    return lines


@dataclass
class Comparison:
    """One section and batch size: the configuration with the best mean final value of what the
    configurations are compared by (:class:`Score`; its own or its averaged model's), paired on
    seeds against each other configuration. ``loss`` is signed (lower is better)."""

    section: str
    batch_size: int
    best: ConfigStats
    loss: float
    which: str  # "last" or "averaged"
    against: list[tuple[ConfigStats, Any]]  # (other, Estimate of other - best, paired over seeds)
    diverged_best: bool = False  # the best diverged on a seed another one completed

    @property
    def winner(self) -> bool:
        """A winner only where every paired interval excludes zero on the side of the best."""
        return (not self.diverged_best and bool(self.against)
                and all(est.n >= 2 and est.low > 0 for _, est in self.against))

    def text(self) -> str:
        """One line: the winner, or "no significant difference" with the closest contender."""
        head = f"{self.section} batch {self.batch_size}: "
        if not self.against:
            return head + f"{self.best.label} only"
        other, est = min(self.against, key=lambda t: t[1].mean if math.isfinite(t[1].mean) else math.inf)
        by = self.best.by
        diff = f"{other.label} is worse by {est.text('.3g', signed=True)} (paired over {est.n} seeds)"
        value = f"{by.shown(self.loss):.4g}, {self.which}" + ("" if by.metric == "val_loss" else f" {by.metric}")
        if self.winner:
            return head + f"{self.best.label} ({value}); next best {diff}"
        why = f"; {self.best.label} diverged on a seed the others completed" if self.diverged_best else ""
        return head + f"no significant difference: best mean {self.best.label} ({value}), {diff}{why}"


def _seed_values(c: ConfigStats, which: str) -> dict[int, float]:
    """Signed final values per seed (see :class:`Score`); a diverged seed is +inf."""
    key = c.by.metric if which == "last" else c.by.averaged
    out: dict[int, float] = {}
    for r in c.rows:
        v = r.final.get(key, getattr(r, key, None))
        if r.status == "completed" and v is not None:
            out[r.spec.seed] = c.by.signed(float(v))
        elif r.status == "diverged":
            out[r.spec.seed] = math.inf
    return out


def comparisons(stats: list[ConfigStats]) -> list[Comparison]:
    """Per section and batch size with at least two configurations: the best mean final loss,
    paired on seeds (95% t interval of the difference) against each other configuration."""
    from suite.report.stats import paired_difference

    out = []
    for section in dict.fromkeys(c.section for c in stats):
        sec = [c for c in stats if c.section == section]
        for bs in sorted({c.batch_size for c in sec}):
            scored = [(c.score, c) for c in sec if c.batch_size == bs and c.score is not None]
            if len(scored) < 2:
                continue
            (loss, which), best = min(scored, key=lambda t: t[0])
            mine = _seed_values(best, which)
            against, diverged_best = [], False
            for score, other in scored:
                if other is best:
                    continue
                theirs = _seed_values(other, score[1])
                if any(math.isinf(v) and math.isfinite(theirs.get(s, math.inf)) for s, v in mine.items()):
                    diverged_best = True
                against.append((other, paired_difference(theirs, mine)))
            out.append(Comparison(section, bs, best, loss, which, against, diverged_best))
    return out


def winners(stats: list[ConfigStats]) -> list[tuple[str, int, str, float, str]]:
    """Per section and batch size, the configuration with the lowest mean final loss (its own
    or its averaged model's) *where it beats every other one*: the 95% interval of the paired
    difference over seeds excludes zero. ``(section, batch_size, label, loss, which)``; a batch
    size within the noise has no entry (see :func:`winner_lines`)."""
    return [(c.section, c.batch_size, c.best.label, c.best.by.shown(c.loss), c.which)
            for c in comparisons(stats) if c.winner]


WINNER_HEADER = "winner per batch size (paired over seeds, 95% interval; a winner only where it excludes 0):"


def winner_lines(stats: list[ConfigStats]) -> list[str]:
    """One line per section and batch size: its winner, or "no significant difference"."""
    return [c.text() for c in comparisons(stats)]


def curves_figure(stats: list[ConfigStats], section: str):
    """Validation loss against optimizer steps, one line per configuration (mean over seeds); colour
    and marker distinct for any number of lines."""
    from suite.report.style import style

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, c in enumerate(c for c in stats if c.section == section):
        by_step: dict[int, list[float]] = {}
        for r in c.rows:
            for step, v in r.curve:
                if math.isfinite(v):
                    by_step.setdefault(step, []).append(v)
        if by_step:
            steps = sorted(by_step)
            label = c.label if c.label.endswith(f"b{c.batch_size}") else f"{c.label} b={c.batch_size}"
            ax.plot(steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], label=label,
                    markevery=max(1, len(steps) // 8), markersize=4, **style(i))
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("validation loss (mean over seeds)")
    ax.set_yscale("log")
    ax.set_title(section)
    if ax.lines and len(ax.lines) <= 24:
        ax.legend(fontsize=7)
    finish_figure(fig)
    return fig


def batch_size_figure(stats: list[ConfigStats], section: str):
    """Final validation loss against batch size, one line per variant (mean ± std over seeds),
    dashed for the averaged model; ``None`` when the section has a single batch size."""
    sec = [c for c in stats if c.section == section]
    if len({c.batch_size for c in sec}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for variant in dict.fromkeys(c.variant for c in sec):
        for key, style, suffix in (("val_loss", "-", ""), ("avg_val_loss", "--", " (averaged)")):
            pts = sorted((c.batch_size, c.stat(key)) for c in sec if c.variant == variant and c.stat(key))
            if pts:
                ax.errorbar([b for b, _ in pts], [s[0] for _, s in pts], yerr=[s[1] for _, s in pts], marker="o",
                            capsize=3, linestyle=style, label=variant + suffix)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("final validation loss (mean ± std over seeds)")
    ax.set_title(section)
    if ax.lines or ax.containers:
        ax.legend(fontsize=7)
    finish_figure(fig)
    return fig
