"""Reports: figures and terminal summaries, from engine results or from MLflow."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    fig.tight_layout()
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
