"""A tiny networks benchmark file end to end (issue 26): its tuned studies on a real network, the NQM
fitted to it in the same experiment, and the networks report with claims, time and overlay."""

from __future__ import annotations

import pytest

TINY = """
name: tiny-networks
defaults:
  seeds: 1
experiments:
  scaling_digits_sgd:
    problem: {digits: {width: 8}}
    optimizer:
      sgd: {momentum: 0.0, weight_decay: 0.0}
    batch_size: [16, 64, 256]
    tune:
      objective: steps-to-target:0.6
      trials: 2
      budget: steps:150
      space: {optimizer.lr: log:0.1:1}
      reevaluate: 2
      reevaluate_top: 1
      study_seed: 0
      studies: 2
  scaling_digits_adam:
    problem: {digits: {width: 8}}
    optimizer:
      adam: {beta1: 0.9, beta2: 0.999, weight_decay: 0.0}
    batch_size: [16, 64, 256]
    tune:
      objective: steps-to-target:0.6
      trials: 2
      budget: steps:150
      space: {optimizer.lr: log:0.01:0.1}
      reevaluate: 2
      reevaluate_top: 1
      study_seed: 0
      studies: 2
"""


@pytest.mark.slow
def test_a_tiny_networks_file_runs_fits_and_reports(cli, workdir):
    path = workdir / "tiny.yaml"
    path.write_text(TINY)
    cli("nqm", "fit", "--problem", "digits", "--set", "problem.width=8", "--reference-steps", "30", "--examples",
        "64", "--top-k", "4", "--batch-sizes", "16,64,256", "--experiment", "tiny-networks")
    out = cli("run", str(path)).output
    assert "claims: " in out and "digits: Adam helps at large batch sizes" in out
    md = (workdir / "reports" / "tiny-networks" / "report.md").read_text()
    assert "# sgd-suite networks report: tiny-networks" in md
    assert "## digits: steps and time to val_loss ≤ 0.6" in md
    assert "seconds to target on cpu on " in md and "bootstrap over studies and seeds" in md
    overlay = md.split("the fitted NQM against the measurement")[1]
    assert "| SGD |" in overlay and "(SGD)" in overlay and "Adam as H^(−1/2)" in overlay
    assert "predicted / measured" in overlay
    # the paragraph is whole: what is predicted, from where the steps count, and the agreement rule
    assert "The NQM fitted to digits (run " in overlay and "Its steps count from its checkpoint (val_loss " in overlay
    assert "critical batch size is within 2× of the measurement. Momentum is predicted" in overlay
    again = cli("report", str(path), "--no-log", "--out", str(workdir / "again")).output
    assert "claims: " in again and (workdir / "again" / "report.md").read_text().count("\n## digits: ") == 1
