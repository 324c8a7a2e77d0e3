"""Repeated tuning: R independent studies per (variant, batch size) (``--studies R``, ``studies:``
in a benchmark file), the two-level bootstrap over studies and seeds, and the "Best variant" line
that uses the report's test."""

from __future__ import annotations

import math
import re

import numpy as np
import optuna
import pytest

from suite.registry import get_registry
from suite.report import stats
from suite.tuning.budget import Budget
from suite.tuning.objective import Objective
from suite.tuning.plan import plan_studies
from suite.tuning.space import Variant
from suite.tuning.winners import Reeval, StudySummary, close_all, figures, markdown, winners
from tests.conftest import runs_of


def _plans(studies: int):
    sgd = Variant("sgd", "constant", "none", "shuffle")
    return plan_studies(get_registry(), problems=["linreg"], variant_list=[sgd],
                        batch_sizes=[8, 64], budget=Budget.parse("epochs:1"), objective=Objective.parse("final"),
                        seeds=1, studies=studies)


def test_r_studies_per_cell_with_unique_readable_names_and_r1_names_unchanged():
    one, three = _plans(1), _plans(3)
    assert len(three) == 6 and [p.study_index for p in three] == [0, 1, 2, 0, 1, 2]
    assert [p.name for p in one] == [three[0].name, three[3].name]  # R=1 names as before: old stores resume
    assert three[1].name == three[0].name + "/s1" and three[2].name == three[0].name + "/s2"
    assert len({p.name for p in three}) == 6 and len({p.legacy_name for p in three}) == 6
    assert "study_index" not in three[0].settings() and three[2].settings()["study_index"] == 2


def test_each_study_of_a_cell_tunes_on_seeds_of_its_own_and_re_evaluates_on_the_shared_fresh_seeds():
    sgd = Variant("sgd", "constant", "none", "shuffle")
    plans = plan_studies(get_registry(), problems=["linreg"], variant_list=[sgd], batch_sizes=[8],
                         budget=Budget.parse("epochs:1"), objective=Objective.parse("final"), seeds=2, studies=3)
    assert [list(p.tuning_seeds) for p in plans] == [[0, 1], [2, 3], [4, 5]]
    assert "tuning_seeds" not in plans[0].settings() and plans[2].settings()["tuning_seeds"] == [4, 5]
    assert plans[1].name == plans[0].name + "/s1"  # the R studies of a cell still share the settings hash


def test_the_benchmark_files_studies_key(tmp_path):
    from suite.api.tuning import plan_benchmark
    from suite.specs.benchfile import load

    path = tmp_path / "b.yaml"
    path.write_text("experiments:\n  a:\n    problem: linreg\n    batch_size: [8]\n    epochs: 1\n"
                    "    tune: {trials: 2, studies: 3}\n")
    bench = load(path, get_registry())
    assert bench.tuned[0].tune.studies == 3
    (request,) = plan_benchmark(bench, get_registry(), device="cpu")
    assert [p.study_index for p in request.plans] == [0, 1, 2]


# -- the two-level bootstrap -----------------------------------------------------------------------
def test_two_level_bootstrap_covers_the_true_median_about_95_percent_of_the_time():
    """Simulated cells: 8 studies whose winners differ (between-study sd 1) around a true median 0,
    each re-evaluated on 5 seeds (seed sd 1). The interval holds 0 in about 95% of 200 data sets,
    where the t interval over one study's seeds (tuning not covered) mostly does not."""
    rng = np.random.default_rng(20261207)
    hits = one_study_hits = 0
    n = 200
    for i in range(n):
        tuning = rng.normal(0.0, 1.0, 8)
        data = {k: {10_000 + s: float(tuning[k] + rng.normal(0.0, 1.0)) for s in range(5)} for k in range(8)}
        est = stats.study_estimate(data, seed=i)
        assert est.covers == stats.STUDIES_AND_SEEDS and est.studies == 8 and est.n == 40
        hits += est.low <= 0.0 <= est.high
        one = stats.study_estimate({0: data[0]})
        one_study_hits += one.low <= 0.0 <= one.high
    assert 0.90 <= hits / n <= 0.99, hits / n
    assert one_study_hits / n < 0.7, one_study_hits / n


def test_the_estimate_is_the_median_over_studies_and_says_what_it_covers():
    data = {0: {1: 1.0, 2: 3.0}, 1: {1: 10.0, 2: 12.0}, 2: {1: 5.0, 2: 5.0}}
    est = stats.study_estimate(data)
    assert est.mean == 5.0  # study means 2, 11, 5: the median
    assert est.label == "95% bootstrap over 3 studies and seeds"
    assert est == stats.study_estimate(data)  # seeded: the same report twice
    one = stats.study_estimate({0: data[0]})
    assert one.label == "95% t interval over seeds (1 study: the tuning is not covered)"
    assert (one.mean, one.n) == (2.0, 2) and one == stats.mean_interval([1.0, 3.0])


def test_paired_comparison_pairs_on_study_and_seed():
    # a is b plus 1 on every (study, seed); the studies and seeds vary a lot, the pairs do not
    b = {k: {s: 10.0 * k + 3.0 * s for s in range(4)} for k in range(4)}
    a = {k: {s: v + 1.0 + 0.01 * (k + s) for s, v in vs.items()} for k, vs in b.items()}
    est = stats.paired_studies(a, b)
    assert 1.0 < est.low <= est.mean <= est.high < 1.1
    unpaired = stats.study_estimate(a).low - stats.study_estimate(b).high
    assert unpaired < 0  # the cells' own intervals overlap


@pytest.mark.parametrize(("error_a", "error_b"), [(0.05, 0.05), (0.08, 0.005), (0.005, 0.08)])
def test_crossed_studies_cover_the_difference_at_the_optima_despite_one_sided_tuning_error(error_a, error_b):
    """Two methods, 3 studies each, re-evaluated on the same 5 seeds: a study's value is its
    method's optimum + a one-sided tuning error (exponential, mean ``error_a`` / ``error_b`` in
    log2 steps: alike, or one method tuned much worse than the other) + the seed's effect (shared
    by both methods) + a little noise. The difference at the optima is 0.3. Over 100 data sets the
    interval covers it at least 90% of the time and always holds its own point (the median study
    pair); the bootstrap of the index-paired studies, centred on the tuned median, covers it less
    often; so does the bare range over the study pairs where one method is tuned worse."""
    rng = np.random.default_rng(1)
    crossed = paired = pair_range = 0
    for i in range(100):
        seed_effect = rng.normal(0, 0.1, 5)
        a, b = ({k: {s: opt + err + seed_effect[s] + rng.normal(0, 0.01) for s in range(5)}
                 for k, err in enumerate(rng.exponential(scale, 3))} for opt, scale in ((1.3, error_a), (1.0, error_b)))
        est = stats.crossed_studies(a, b, seed=i)
        crossed += est.low <= 0.3 <= est.high
        assert est.low <= est.mean <= est.high
        near = stats.paired_studies(a, b)
        paired += near.low <= 0.3 <= near.high
        means_a, means_b = ([float(np.mean(list(v.values()))) for v in x.values()] for x in (a, b))
        pair_range += min(means_a) - max(means_b) <= 0.3 <= max(means_a) - min(means_b)
    assert crossed >= 90 and paired < crossed
    if error_a != error_b:
        assert pair_range < 50
    assert est.covers == stats.STUDY_RANGE
    assert est.label == "95% over seeds of the best studies ± the larger spread over 3 studies"
    one = stats.crossed_studies({0: a[0]}, {0: b[0]})  # one study each: the seeds only, and it says so
    assert one == stats.paired_studies({0: a[0]}, {0: b[0]}) and "tuning is not covered" in one.label


def test_bonferroni_levels_and_t_quantiles():
    scipy_stats = pytest.importorskip("scipy.stats")
    assert stats.bonferroni(2) == pytest.approx(0.975) and stats.bonferroni(1) == 0.95
    for df in (1, 2, 4, 10, 40):
        assert stats.t_quantile(0.99375, df) == pytest.approx(scipy_stats.t.ppf(0.99375, df), rel=1e-3)
    wide = stats.mean_interval([1.0, 2.0, 4.0], level=0.975)
    assert wide.high - wide.low > (lambda e: e.high - e.low)(stats.mean_interval([1.0, 2.0, 4.0]))


# -- the "Best variant" line -------------------------------------------------------------------------
def _summary(variant: str, index: int, per_seed: dict[int, float]) -> StudySummary:
    return StudySummary(name=f"p/{variant}/b8/s{index}", problem="p", variant=variant, batch_size=8, n_counted=4,
                        n_complete=4, n_pruned=0, n_failed=0, n_diverged=0, best_value=min(per_seed.values()),
                        best_number=0, best_params={}, reeval=Reeval(list(per_seed.values()), per_seed=per_seed),
                        n_reevaluated=1, study_index=index)


def test_best_variant_only_where_the_paired_interval_excludes_no_difference():
    seeds = (10_000, 10_001, 10_002)
    clear = [_summary("a", k, {s: 100.0 + 5 * k + i for i, s in enumerate(seeds)}) for k in range(3)]
    clear += [_summary("b", k, {s: 200.0 + 5 * k + 2 * i for i, s in enumerate(seeds)}) for k in range(3)]
    won = winners(clear, 8)
    assert won.variant == "a" and "over seeds of the best studies ± the larger spread" in won.basis
    # c is a on some (study, seed) pairs better, on others worse: the paired interval covers 0
    close = [s for s in clear if s.variant == "a"]
    close += [_summary("c", k, {s: 100.0 + 5 * k + i + (3.0 if (k + i) % 2 else -3.2)
                                for i, s in enumerate(seeds)}) for k in range(3)]
    tie = winners(close, 8)
    log2 = {v: {s.study_index: {k: math.log2(x) for k, x in s.reeval.per_seed.items()} for s in close
                if s.variant == v} for v in ("a", "c")}
    assert stats.crossed_studies(log2["a"], log2["c"]).covers_zero  # the report's test on the same values
    assert tie.variant is None and tie.text in ("no significant difference: c vs a",
                                                "no significant difference: a vs c")
    md = markdown(close, "final val loss")
    assert f"Best variant per batch size: b8: {tie.text} (every study against every study, paired on fresh seed" in md
    assert "median of 3 studies" in md  # a cell of 3 studies
    figs = figures(clear, "final val loss")  # one point per cell: the median over its studies
    assert set(figs) == {"p_best_value_vs_batch_size.png"}
    close_all(figs)


def test_one_value_each_names_no_winner():
    one = [StudySummary(name=v, problem="p", variant=v, batch_size=8, n_counted=2, n_complete=2, n_pruned=0,
                        n_failed=0, n_diverged=0, best_value=x, best_number=0, best_params={})
           for v, x in (("a", 1.0), ("b", 2.0))]
    won = winners(one, 8)
    assert won.variant is None and won.text == "no significant difference: a vs b" and "no interval" in won.basis


# -- end to end --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_suite_tune_with_three_studies_end_to_end(cli, workdir, mlflow_client):
    """`suite tune --studies 3` on a small NQM: a real journal storage and sqlite MLflow store.
    3 studies per batch size with their own sampler seeds (their trials differ), each winner
    re-evaluated on the same fresh seeds, every run tagged with its study index."""
    out = cli("tune", "--experiment", "st", "--problem", "nqm", "--set", "problem.dim=8", "--optimizer", "sgd",
              "--set", "optimizer.momentum=0.0", "--set", "optimizer.weight_decay=0.0",
              "--space", "optimizer.lr=log:0.05:3", "--objective", "steps-to-target:0.1", "--batch-size", "8,64",
              "--trials", "4", "--budget", "steps:auto", "--seeds", "1", "--reevaluate", "2", "--reevaluate-top", "1",
              "--population", "4", "--study-seed", "0", "--studies", "3", "--workers", "1", "--quiet").output
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / ".suite" / "optuna.journal")))
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert len(names) == 6
    for b in (8, 64):
        cell = [n for n in names if f"/b{b}-" in n]
        base = min(cell, key=len)
        assert sorted(cell) == [base, base + "/s1", base + "/s2"]
        params = [[t.params for t in optuna.load_study(study_name=n, storage=storage).trials] for n in
                  (base, base + "/s1", base + "/s2")]
        assert params[0] != params[1] and params[1] != params[2] and params[0] != params[2]
    reevals = runs_of(mlflow_client, "st", "tags.`suite.kind` = 'reeval'")
    assert len(reevals) == 6 * 2
    seeds = {}
    for r in reevals:
        seeds.setdefault((r.data.params["batch_size"], r.data.tags["suite.study_index"]), set()).add(
            r.data.params["seed"])
    assert sorted(seeds) == [(b, k) for b in ("64", "8") for k in ("0", "1", "2")]
    assert {frozenset(v) for v in seeds.values()} == {frozenset({"10000", "10001"})}  # the same fresh seeds
    trials = runs_of(mlflow_client, "st", "tags.`suite.kind` = 'trial'")
    parents = runs_of(mlflow_client, "st", "tags.`suite.kind` = 'study'")
    assert len(trials) == 6 * 4 and len(parents) == 6
    assert {(r.data.tags["suite.study_index"], r.data.params["seed"]) for r in trials} == {
        ("0", "0"), ("1", "1"), ("2", "2")}  # each study tunes on a seed of its own
    for r in trials + parents + reevals:
        suffix = re.search(r"/s(\d+)$", r.data.tags["suite.study"])
        assert r.data.tags["suite.study_index"] == (suffix.group(1) if suffix else "0")
    assert "median of 3 studies" in out


# -- the report on a sweep of several studies per cell -------------------------------------------------
def _sweep_of_studies(steps_of, spread=(0.8, 1.0, 1.5), beta_tuned=False):
    """Re-evaluation runs of R = len(spread) studies per (method, B): study k's winner takes
    steps_of(method, B) × spread[k] steps (× 1.00, 1.01, 1.02 on the 3 fresh seeds) at lr 0.1·(k+1);
    ``beta_tuned``: first, a method "tuned" whose studies tune β with the lr (β = 0.8 won)."""
    from suite.report.reader import RunRecord, Runs

    params_of = {"SGD": {"optimizer": "sgd", "optimizer.momentum": 0.0},
                 "mom": {"optimizer": "sgd", "optimizer.momentum": 0.9}}
    if beta_tuned:
        params_of = {"tuned": {"optimizer": "sgd", "optimizer.momentum": 0.8}, **params_of}
    recs = []
    for method in params_of:
        for b in (32, 1024):
            for k, factor in enumerate(spread):
                for i, seed in enumerate((10_000, 10_001, 10_002)):
                    target = steps_of(method, b) * factor * (1 + 0.01 * i)
                    hist = [(t, 0.02 * 2 ** (6 - 6 * t / target)) for t in range(0, int(1.2 * target) + 2)]
                    rec = RunRecord(run_id=f"{method}{b}{k}{seed}", section=f"scaling_{method}", spec_hash="",
                                    status="completed", histories={"theory_risk": hist}, final={},
                                    params={"seed": seed, "batch_size": b, **params_of[method],
                                            "optimizer.lr": 0.1 * (k + 1)})
                    rec.study, rec.trial, rec.study_index = f"nqm/{method}/b{b}" + (f"/s{k}" if k else ""), 0, k
                    rec.study_params = {"objective": "steps-to-target:0.02"}
                    if method == "tuned":
                        rec.study_params["space.optimizer.momentum"] = '{"kind": "log", "low": 0.001, "high": 1.0}'
                    recs.append(rec)
    return Runs("x", "sqlite://", recs, None)


def test_a_cell_of_three_studies_is_their_median_and_claims_cross_the_studies_paired_on_seed():
    from suite.report import claims

    def steps_of(m, b):
        return {("SGD", 32): 400, ("mom", 32): 390, ("SGD", 1024): 80, ("mom", 1024): 40}[(m, b)]

    runs = _sweep_of_studies(steps_of)
    sweep = claims.Sweep(runs)
    mom = "momentum β=0.9"
    assert sorted(sweep.tuned) == [("SGD", 32), ("SGD", 1024), (mom, 32), (mom, 1024)]  # one cell each
    cell = sweep.tuned[("SGD", 1024)]
    assert sorted(cell.studies) == [0, 1, 2] and cell.lr_replicates() == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3})
    est = cell.log2_steps()
    assert 2 ** est.mean == pytest.approx(80 * 1.01, rel=0.02)  # the median study (× 1.0)
    assert est.covers == stats.STUDIES_AND_SEEDS and 2 ** est.low < 80 < 80 * 1.5 < 2 ** est.high * 1.1
    ratio = sweep.ratio(mom, "SGD", 1024)
    assert 2 ** ratio.mean == pytest.approx(0.5, rel=0.01) and ratio.studies == 3
    row = claims.momentum_large_batch(runs, sweep)
    assert row.verdict == claims.INCONCLUSIVE, row  # studies ×1.9 apart: the tuning error leaves B=32 open
    steady = _sweep_of_studies(steps_of, spread=(0.98, 1.0, 1.04))  # studies within 6% of each other
    row = claims.momentum_large_batch(steady, claims.Sweep(steady))
    assert row.verdict == claims.REPRODUCED, row
    assert "best studies ± the larger spread over 3 studies" in row.measured and "97.5%" in row.rule


def test_the_claims_on_momentum_read_the_fixed_beta_sweep_beside_a_beta_tuned_one():
    """The lecture's momentum claims are about β = 0.9; a sweep that also tunes β (listed first
    here, and slower than SGD at B = 1024) does not stand in for it."""
    from suite.report import claims

    steps = {("SGD", 32): 400, ("mom", 32): 390, ("SGD", 1024): 80, ("mom", 1024): 40, ("tuned", 32): 400,
             ("tuned", 1024): 160}
    runs = _sweep_of_studies(lambda m, b: steps[(m, b)], spread=(0.98, 1.0, 1.04), beta_tuned=True)
    sweep = claims.Sweep(runs)
    assert sweep.methods[0] == "momentum β tuned" and "momentum β=0.9" in sweep.methods
    assert claims.momentum_large_batch(runs, sweep).verdict == claims.REPRODUCED
