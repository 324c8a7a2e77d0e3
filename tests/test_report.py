"""suite report: paired statistics, claim verdicts, and the report end to end from a real MLflow store."""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import re
from pathlib import Path

import pytest

from suite.report import claims, stats
from suite.report.reader import RunRecord, Runs
from suite.report.scaling import steps_to_target
from tests.conftest import runs_of


# -- statistics -------------------------------------------------------------------------------------
def test_t_quantiles_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 10, 29, 30, 31, 60, 200):
        assert stats.t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=2e-3)


def test_paired_interval_by_hand_excludes_zero():
    """Differences 1.0, 1.1, 0.9: mean 1, sd 0.1, half-width t(2)·0.1/√3 = 4.303·0.0577 = 0.2484."""
    a = {0: 3.0, 1: 4.1, 2: 5.9}
    b = {0: 2.0, 1: 3.0, 2: 5.0}
    est = stats.paired_difference(a, b)
    assert est.n == 3
    assert est.mean == pytest.approx(1.0)
    assert (est.low, est.high) == pytest.approx((1.0 - 0.24843, 1.0 + 0.24843), abs=1e-4)
    assert est.significant


def test_paired_interval_covering_zero_names_no_winner():
    """Differences 0.5, 1.0, -1.5: mean 0, the interval covers 0."""
    est = stats.paired_difference({0: 1.5, 1: 2.0, 2: 0.5}, {0: 1.0, 1: 1.0, 2: 2.0})
    assert est.mean == pytest.approx(0.0)
    assert est.covers_zero and not est.significant
    assert stats.paired_difference({0: 1.0}, {0: 0.0}).n == 1  # one pair: no interval
    assert stats.paired_difference({0: 1.0}, {0: 0.0}).covers_zero


def test_pairing_cancels_seed_variation_that_mean_sd_hides():
    """The issue's example: with replacement worse on every seed by a little, seeds differing a lot."""
    shuffle = {0: 0.22, 1: 0.26, 2: 0.30}
    repl = {0: 0.227, 1: 0.271, 2: 0.315}
    assert stats.mean_interval(repl.values()).low < stats.mean_interval(shuffle.values()).high  # overlapping
    assert stats.paired_difference(repl, shuffle).low > 0


def _grid_stats(losses):
    from suite.registry import get_registry
    from suite.report import tables
    from suite.specs import axes

    specs = axes.expand(get_registry(), axes.product([axes.axis("optimizer.momentum", [0.0, 0.9]),
                                                      axes.axis("seed", [0, 1, 2])]), {"epochs": 1})
    rows = [tables.GridRun("s", sp, "completed", losses[sp.param("optimizer.momentum")][sp.seed]) for sp in specs]
    return tables, tables.config_stats(rows)


def test_tables_name_a_winner_only_where_the_paired_interval_excludes_zero():
    tables, noisy = _grid_stats({0.0: [1.0, 2.0, 3.0], 0.9: [1.2, 1.5, 3.1]})  # diffs -0.2, +0.5, -0.1
    assert tables.winners(noisy) == []
    (line,) = tables.winner_lines(noisy)
    assert "no significant difference" in line
    tables, clear = _grid_stats({0.0: [1.0, 2.0, 3.0], 0.9: [1.1, 2.12, 3.09]})  # worse on every seed
    assert [w[2] for w in tables.winners(clear)] == ["momentum=0.0"]
    assert "momentum=0.0" in tables.winner_lines(clear)[0] and "no significant" not in tables.winner_lines(clear)[0]


# -- claims on synthetic runs -------------------------------------------------------------------------
def _record(section, seed, params, status="completed", histories=None, final=None):
    return RunRecord(run_id=f"{section}-{seed}-{len(str(params))}-{id(params)}", section=section, spec_hash="",
                     status=status, params={"seed": seed, "batch_size": params.pop("batch_size", 16), **params},
                     final=final or {}, histories=histories or {})


def _sampling_runs(gap_per_seed):
    recs = []
    for seed, gap in enumerate(gap_per_seed):
        base = 0.2 + 0.05 * seed
        for sampler, v in (("shuffle", base), ("replacement", base + gap)):
            recs.append(_record("sampling", seed, {"sampler": sampler},
                                histories={"dist_to_opt": [(i, v) for i in range(10)]}))
    return Runs("x", "sqlite://", recs, None)


@pytest.mark.parametrize(("gaps", "verdict"), [
    ([0.007, 0.011, 0.015], claims.REPRODUCED),
    ([-0.007, -0.011, -0.015], claims.CONTRADICTED),
    ([0.01, -0.012, 0.003], claims.INCONCLUSIVE),
])
def test_sampling_claim_verdicts(gaps, verdict):
    row = claims.sampling(_sampling_runs(gaps))
    assert row.verdict == verdict
    assert "distance to optimum, with − without replacement" in row.measured


def _sweep_runs(steps_of):
    """A scaling sweep where steps_of(method, B) is the steps to target at lr 1 (lr 0.5 twice as slow)."""
    recs = []
    for method, params in (("SGD", {"optimizer": "sgd", "optimizer.momentum": 0.0}),
                           ("mom", {"optimizer": "sgd", "optimizer.momentum": 0.9})):
        for b in (32, 1024):
            for seed in (0, 1, 2):
                for lr, slow in ((1.0, 1.0), (0.5, 2.0)):
                    target = steps_of(method, b) * slow * (1 + 0.01 * seed)
                    # the expected risk halves every target/6 steps from 0.02·2^6: reaches 0.02 at `target`
                    hist = [(s, 0.02 * 2 ** (6 - 6 * s / target)) for s in range(0, int(4 * target), 5)]
                    recs.append(_record(f"scaling_{method}", seed, {**params, "optimizer.lr": lr, "batch_size": b},
                                        histories={"theory_risk": hist}))
    return Runs("x", "sqlite://", recs, None)


def test_momentum_claim_verdicts_from_a_synthetic_sweep():
    helps_large = _sweep_runs(lambda m, b: {("SGD", 32): 400, ("mom", 32): 390, ("SGD", 1024): 80,
                                            ("mom", 1024): 40}[(m, b)])
    row = claims.momentum_large_batch(helps_large, claims.Sweep(helps_large))
    assert row.verdict == claims.REPRODUCED, row
    assert "B=1024: ×0.50" in row.measured
    helps_small = _sweep_runs(lambda m, b: {("SGD", 32): 400, ("mom", 32): 200, ("SGD", 1024): 80,
                                            ("mom", 1024): 40}[(m, b)])
    assert claims.momentum_large_batch(helps_small, claims.Sweep(helps_small)).verdict == claims.CONTRADICTED
    missing = Runs("x", "sqlite://", [], None)
    row = claims.momentum_large_batch(missing, claims.Sweep(missing))
    assert row.verdict == claims.INCONCLUSIVE and row.measured.startswith("no data")


REEVAL_SEEDS = (10_000, 10_001, 10_002)


def _study_runs(studies, space_high=4.0):
    """Re-evaluation runs of tuned studies: ``studies[(method, B)]`` lists the re-evaluated trials
    as (lr, steps to the 0.02 target) in trial-number order; each runs on the same fresh seeds."""
    params_of = {"SGD": {"optimizer": "sgd", "optimizer.momentum": 0.0},
                 "mom": {"optimizer": "sgd", "optimizer.momentum": 0.9}}
    recs = []
    for (method, b), trials in studies.items():
        study = f"nqm/{method}/b{b}"
        for number, (lr, steps) in enumerate(trials):
            for i, seed in enumerate(REEVAL_SEEDS):
                target = steps * (1 + 0.01 * i)
                hist = [(t, 0.02 * 2 ** (6 - 6 * t / target)) for t in range(0, int(1.2 * target) + 2)]
                rec = _record(f"scaling_{method}", seed, {**params_of[method], "optimizer.lr": lr, "batch_size": b},
                              histories={"theory_risk": hist})
                rec.study, rec.trial = study, number
                rec.study_params = {"objective": "steps-to-target:0.02",
                                    "space.optimizer.lr": f'{{"high": {space_high}, "kind": "log", "low": 0.01}}'}
                recs.append(rec)
    return Runs("x", "sqlite://", recs, None)


def test_claims_from_tuned_studies_use_each_studys_reevaluated_winner():
    # trial 0 is slow, trial 1 the best, trial 2 in between: the winner is trial 1 at every (method, B)
    studies = {(m, b): [(lr / 2, 2 * steps), (lr, steps), (lr * 2, 1.5 * steps)]
               for (m, b), (lr, steps) in {("SGD", 32): (0.25, 400), ("SGD", 256): (1.0, 100),
                                           ("SGD", 1024): (1.0, 80), ("mom", 32): (0.1, 390),
                                           ("mom", 256): (0.2, 60), ("mom", 1024): (0.2, 40)}.items()}
    runs = _study_runs(studies)
    sweep = claims.Sweep(runs)
    assert sweep.target == 0.02
    best = sweep.tuned[("SGD", 1024)]
    assert best.from_study and best.best_lrs() == {s: 1.0 for s in REEVAL_SEEDS}
    assert best.ranked == [1.0, 2.0, 0.5] and best.lr_top == 4.0
    assert 2 ** best.log2_steps().mean == pytest.approx(80 * 1.01, rel=0.02)  # the winner's fresh-seed steps
    row = claims.momentum_large_batch(runs, sweep)
    assert row.verdict == claims.REPRODUCED, row
    assert "B=1024: ×0.50" in row.measured
    assert claims.momentum_smaller_lr(runs, sweep).verdict == claims.REPRODUCED
    grows = claims.best_lr_grows(runs, sweep)  # 0.25 → 1 → 1, below the space's top 4: grows, then capped
    assert grows.verdict == claims.REPRODUCED, grows
    for rec in runs.records:  # the tuning session named trial 2 its winner: the report follows it
        rec.study_best = 2
    named = claims.Sweep(runs).tuned[("SGD", 1024)]
    assert named.best_lrs() == {s: 2.0 for s in REEVAL_SEEDS} and named.ranked == [2.0, 1.0, 0.5]
    at_the_top = _study_runs(studies, space_high=1.0)  # the winner at lr 1 sits at the top of the space: no cap shown
    row = claims.best_lr_grows(at_the_top, claims.Sweep(at_the_top))
    assert row.verdict == claims.INCONCLUSIVE and "no cap seen" in row.measured


def test_steps_to_target_interpolates_between_evaluations():
    assert steps_to_target([(0, 1.0), (10, 0.1), (20, 0.01)], 0.1) == 10
    assert steps_to_target([(0, 1.0), (10, 0.01)], 0.1) == pytest.approx(5.0)
    assert math.isinf(steps_to_target([(0, 1.0), (10, 0.5)], 0.1))


def test_closed_form_steps_match_perfect_scaling_then_plateau():
    from suite.report.scaling import closed_form_steps, predicted_critical_batch_size

    small, large, larger = (closed_form_steps("SGD", b, 100, 1.0)[0] for b in (8, 16, 4096))
    assert small / large == pytest.approx(2.0, rel=0.1)  # perfect scaling at small B
    assert larger < large and closed_form_steps("SGD", 8192, 100, 1.0)[0] == pytest.approx(larger, rel=0.05)
    crit = predicted_critical_batch_size("SGD", 8, 100, 1.0)
    assert 8 < crit < 4096
    # the definition holds at the answer: the closed form evaluated there needs 2x perfect scaling's steps
    # (within the interpolation between grid points a quarter doubling apart, and the integer steps)
    efficiency = small * 8 / (crit * closed_form_steps("SGD", crit, 100, 1.0)[0])
    assert efficiency == pytest.approx(0.5, rel=0.06)
    assert predicted_critical_batch_size("precond p=0.5", 8, 100, 1.0) > crit


# -- end to end ------------------------------------------------------------------------------------------
BENCH = """
name: tiny
experiments:
  sampling:
    problem: linreg
    epochs: 2
    sampler: [shuffle, replacement]
    params: {optimizer.lr: 0.05}
    batch_size: 64
    seeds: 2
  steady_state:
    problem: {nqm: {dim: 5}}
    steps: 60
    eval_every: 10
    params: {optimizer.lr: [0.1, 0.2]}
    averager: {none: {}, ema: {decay: 0.9}}
    batch_size: [1, 4]
    seeds: 2
"""


def test_report_end_to_end(cli, workdir, mlflow_client):
    (workdir / "tiny.yaml").write_text(BENCH)
    cli("run", "tiny.yaml", "--quiet", "--workers", "1")
    out = cli("report", "tiny.yaml").output
    page = workdir / "reports" / "tiny" / "report.html"
    assert f"report: {page.relative_to(workdir)}" in out or str(page) in out
    html = page.read_text()
    md = (workdir / "reports" / "tiny" / "report.md").read_text()
    # the claims table: a row per claim, each with a computed verdict
    assert md.count("| inconclusive |") + md.count("| reproduced |") + md.count("| contradicted |") >= 11
    assert "Steady-state risk of constant-lr SGD ∝ α/B" in md and "no data: needs ≥ 3 values of λ" in md
    # each claim's power in the table, and the one-line summary on the command line
    assert "| power |" in md and "(bootstrap over seeds, 200 draws)" in md and "n/a (no runs to resample)" in md
    assert re.search(r"^claims: \d+ ", out, re.M)
    # figures embedded (self-contained) and decodable PNGs
    images = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(images) >= 3
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "http://" not in html and "https://" not in html
    # excess over the optimum's loss where it is known (linreg), paired comparisons per batch size
    sampling = md.split("## sampling")[1].split("##")[0]
    assert re.search(r"\| sampler=shuffle \| 64 \| 2 \| 0 \| [0-9.e-]+ ± [0-9.e-]+ \| - \| [0-9.e-]+ ± ", sampling)
    assert "batch 64:" in sampling
    # a component's name is shown as given: the averager "none", not Python's None
    steady = md.split("## steady_state")[1].split("##")[0]
    assert "averager=none" in steady and "averager=ema" in steady and "None" not in steady
    # logged on the grid parent run
    exp = mlflow_client.get_experiment_by_name("tiny")
    parent = mlflow_client.search_runs([exp.experiment_id], "tags.`suite.kind` = 'grid'")[0]
    names = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md"} <= names
    # ... with the findings as tags: each claim's verdict, each paired comparison's outcome
    tags = mlflow_client.get_run(parent.info.run_id).data.tags
    verdicts = [v for k, v in sorted(tags.items()) if re.fullmatch(r"suite\.claims\.\d\d", k)]
    assert verdicts and verdicts == re.findall(r"^- ((?:reproduced|contradicted|inconclusive): .*)$", md, re.M)
    assert re.match(r"claims: \d+ ", tags["suite.claims"])
    assert tags["suite.winner.sampling.b64"] == sampling.split("batch 64: ")[1].split("\n")[0]


def test_report_bad_input_is_a_one_line_error(cli, workdir, mlflow_client):
    result = cli("report", "nope", ok=False)
    assert result.exit_code == 2 and "does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1
    mlflow_client.create_experiment("empty")
    result = cli("report", "empty", ok=False)
    assert result.exit_code == 2 and "no runs" in result.output
    assert not (workdir / "reports").exists()


TUNED_BENCH = """
name: tuned
experiments:
  plain:
    problem: {nqm: {dim: 5}}
    steps: 20
    params: {optimizer.lr: [0.1, 0.2]}
    batch_size: 8
    seeds: 2
  scaling_sgd:
    description: SGD tuned by Optuna at each batch size
    problem: {nqm: {dim: 8}}
    optimizer:
      sgd: {momentum: 0.0, weight_decay: 0.0}
    batch_size: [8, 64]
    seeds: 1
    tune:
      objective: steps-to-target:0.1
      trials: 4
      budget: steps:auto
      space: {optimizer.lr: 'log:0.05:3'}
      reevaluate: 2
      reevaluate_top: 2
      population: 4
      study_seed: 0
"""


def test_a_benchmark_files_tuned_experiment_runs_as_optuna_studies_and_reports(cli, workdir, mlflow_client,
                                                                              monkeypatch):
    """`suite tune FILE` tunes only the file's tune: experiments (one Optuna study per variant and
    batch size) and writes the file's report from the studies' re-evaluation runs; `suite run
    FILE` runs the grids and reports on both."""
    (workdir / "tuned.yaml").write_text(TUNED_BENCH)
    out = cli("tune", "tuned.yaml", "--quiet", "--workers", "1").output
    assert "report: reports/tuned/report.html" in out
    reevals = runs_of(mlflow_client, "tuned", "tags.`suite.kind` = 'reeval'")
    trials = runs_of(mlflow_client, "tuned", "tags.`suite.kind` = 'trial'")
    assert len(reevals) == 2 * 2 * 2  # 2 studies × top 2 trials × 2 fresh seeds
    assert len(trials) == 2 * 4  # 2 studies × 4 trials × 1 seed
    assert {r.data.tags["suite.section"] for r in reevals + trials} == {"scaling_sgd"}
    assert not runs_of(mlflow_client, "tuned", "tags.`suite.kind` = 'run'")  # the grid was not run
    md = (workdir / "reports" / "tuned" / "report.md").read_text()
    scaling = md.split("## Batch-size scaling")[1].split("\n## ")[0]
    assert "tuned by Optuna at each batch size" in scaling and "expected risk to reach 0.1" in scaling
    rows = re.findall(r"^\| SGD \| (\d+) \| (\d+)", scaling, re.M)
    assert [b for b, _ in rows] == ["8", "64"] and all(int(steps) > 0 for _, steps in rows)
    # the report's winner at each batch size is the re-evaluated trial with the fewest mean steps
    for b, steps in rows:
        per_trial: dict[str, list[float]] = {}
        for r in reevals:
            if r.data.params["batch_size"] == b:
                hist = [(m.step, m.value) for m in mlflow_client.get_metric_history(r.info.run_id, "theory_risk")]
                per_trial.setdefault(r.data.tags["suite.reeval_of"], []).append(steps_to_target(sorted(hist), 0.1))
        best = min(2 ** (sum(math.log2(v) for v in vs) / len(vs)) for vs in per_trial.values())
        assert int(steps) == round(best)
    (tune_run,) = runs_of(mlflow_client, "tuned", "tags.`suite.kind` = 'tune'")
    cli("tune", "tuned.yaml", "--quiet", "--workers", "1")  # again: nothing to tune or re-evaluate
    assert len(runs_of(mlflow_client, "tuned", "tags.`suite.kind` = 'reeval'")) == 8
    (again,) = runs_of(mlflow_client, "tuned", "tags.`suite.kind` = 'tune'")  # its report run is reused
    assert again.info.run_id == tune_run.info.run_id
    out = cli("run", "tuned.yaml", "--quiet", "--workers", "1").output
    assert len(runs_of(mlflow_client, "tuned", "tags.`suite.kind` = 'run'")) == 4
    assert len(runs_of(mlflow_client, "tuned", "tags.`suite.kind` = 'trial'")) == 8  # the studies were full
    assert len(runs_of(mlflow_client, "tuned", "tags.`suite.kind` = 'reeval'")) == 8  # and re-evaluated
    assert "report: reports/tuned/report.html" in out
    md = (workdir / "reports" / "tuned" / "report.md").read_text()
    assert "## plain" in md and "## Batch-size scaling" in md
    _same_report_both_ways(workdir, monkeypatch, "tuned", "tuned.yaml")


def test_a_tuned_experiment_reports_studies_that_plain_suite_tune_made(cli, workdir, mlflow_client):
    """The same studies made first by `suite tune` flags (runs without a section tag): the file's
    `suite tune` finds them full and re-evaluated, runs nothing, and its report still holds them."""
    (workdir / "tuned.yaml").write_text(TUNED_BENCH)
    cli("tune", "--experiment", "tuned", "--problem", "nqm", "--set", "problem.dim=8", "--optimizer", "sgd",
        "--set", "optimizer.momentum=0.0", "--set", "optimizer.weight_decay=0.0", "--space", "optimizer.lr=log:0.05:3",
        "--objective", "steps-to-target:0.1", "--batch-size", "8,64", "--trials", "4", "--budget", "steps:auto",
        "--seeds", "1", "--reevaluate", "2", "--reevaluate-top", "2", "--population", "4", "--study-seed", "0",
        "--workers", "1", "--quiet")
    before = len(runs_of(mlflow_client, "tuned"))
    cli("tune", "tuned.yaml", "--quiet", "--workers", "1")
    assert len(runs_of(mlflow_client, "tuned")) == before  # the same studies: nothing ran again
    md = (workdir / "reports" / "tuned" / "report.md").read_text()
    scaling = md.split("## Batch-size scaling")[1].split("\n## ")[0]
    assert [b for b in re.findall(r"^\| SGD \| (\d+) \|", scaling, re.M)] == ["8", "64"]


def _same_report_both_ways(workdir: Path, monkeypatch, experiment: str, bench: str) -> None:
    """The report read through the direct sqlite store (the default on a local store, without
    MLflow) and through MlflowClient: the same records and the same Markdown."""
    from suite.report.build import write_report
    from suite.report.reader import read_runs

    uri = os.environ["MLFLOW_TRACKING_URI"]
    direct = read_runs(experiment, uri)
    md_direct = write_report(experiment, uri, workdir / "r-direct", benchmark=bench, log=False).with_suffix(".md")
    with monkeypatch.context() as m:
        m.setenv("SUITE_TRACKING_VIA_MLFLOW", "1")
        via = read_runs(experiment, uri)
        md_via = write_report(experiment, uri, workdir / "r-mlflow", benchmark=bench, log=False).with_suffix(".md")
    assert type(direct.source).__name__ == "_DirectSource" and type(via.source).__name__ == "_MlflowSource"
    assert direct.parent_run_id == via.parent_run_id
    assert [dataclasses.asdict(r) for r in direct.records] == [dataclasses.asdict(r) for r in via.records]
    for a, b in zip(direct.records, via.records, strict=True):
        assert direct.history(a, "val_loss") == via.history(b, "val_loss")
    first, second = direct.records[0], via.records[0]  # a run's artifact, read either way; a missing one is None
    assert direct.artifact_text(first, "final_params.json") == via.artifact_text(second, "final_params.json")
    assert '"learned"' in (direct.artifact_text(first, "final_params.json") or "")
    assert direct.artifact_text(first, "nope.json") is None and via.artifact_text(second, "nope.json") is None

    def text(md: Path) -> str:  # the same but for the minute each was written in
        return re.sub(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d\.", "Generated (time).", md.read_text(), count=1)

    assert "Generated (time)." in text(md_direct)
    assert text(md_direct) == text(md_via)


def test_a_report_reads_the_same_runs_without_mlflow_as_through_it(cli, workdir, monkeypatch):
    (workdir / "tiny.yaml").write_text(BENCH)
    cli("run", "tiny.yaml", "--quiet", "--workers", "1")
    _same_report_both_ways(workdir, monkeypatch, "tiny", "tiny.yaml")


def test_report_figures_label_log_axes_in_plain_text_with_fixed_margins():
    """Log-axis tick labels are matplotlib's own (10⁻², 3×10⁻¹, 2⁵) in Unicode rather than
    mathtext, and the margins are set in inches, whatever the figure's size."""
    import matplotlib.pyplot as plt

    from suite.report.style import finish_figure

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([4, 8, 32, 1024], [0.012, 0.3, 2.5, 9.0])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylim(0.2, 0.9)  # less than a decade: matplotlib labels the minor ticks too
    finish_figure(fig, left=1.0, bottom=0.5)
    fig.canvas.draw()
    ys = [t.get_text() for t in ax.get_yticklabels(minor=True) + ax.get_yticklabels() if t.get_text()]
    xs = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ys and xs and not any("$" in t for t in ys + xs)
    assert "3×10⁻¹" in ys and "2⁵" in xs
    assert fig.subplotpars.left == pytest.approx(1.0 / 8) and fig.subplotpars.bottom == pytest.approx(0.5 / 4)
    plt.close(fig)
