"""The report's exact NQM optima: every tuned method's closed form, each tuned cell's regret
(measured steps over the exact optimum's) and the claims row with the median and worst regret."""

from __future__ import annotations

import numpy as np
import pytest

from suite import theory as T
from suite.report import build, claims, lecture_claims, power_nqm, scaling
from suite.report.reader import RunRecord, Runs

DIM = 20
H = 1 / np.arange(1, DIM + 1)
SEEDS = (10_000, 10_001, 10_002)


@pytest.mark.parametrize(("method", "kw"), [
    ("SGD", {}), ("momentum β=0.9", {"momentum": 0.9}), ("precond p=0.5", {"p": 0.5}),
    ("SGD + EMA γ=0.95", {"ema": 0.95}), ("momentum β tuned", {"tune_momentum": True}),
    ("SGD (scaling_sgd)", {}),  # a suffix that tells two experiments apart
])
def test_every_tuned_method_has_its_exact_optimum(method, kw):
    got = scaling.closed_form_optimum(method, 64, DIM, 1.0, 0.05)
    assert got == T.optimum(H, H, 64, 0.05, **kw)
    assert scaling.closed_form_steps(method, 64, DIM, 1.0, 0.05) == (got.steps, got.lr)


def test_methods_without_a_closed_form_have_none():
    for method in ("SGD + SWA", "adam", "SGD + EMA"):
        assert scaling.closed_form_optimum(method, 64, DIM, 1.0, 0.05) is None


def _record(method: str, b: int, seed: int, trial: int, lr: float, steps: float, **params) -> RunRecord:
    """A re-evaluation run of a study whose expected risk halves every steps/6 steps from 0.02·2^6."""
    opt = {"optimizer": "sgd", "optimizer.momentum": 0.0, "optimizer.lr": lr, "problem.dim": DIM, **params}
    hist = [(t, 0.02 * 2 ** (6 - 6 * t / steps)) for t in range(0, int(1.2 * steps) + 2)]
    key = scaling.AVG_RISK if "averager" in params else scaling.RISK
    rec = RunRecord(run_id=f"{method}-{b}-{seed}-{trial}", section=f"scaling_{method}", spec_hash="",
                    status="completed", params={"seed": seed, "batch_size": b, **opt}, final={},
                    histories={key: hist})
    rec.study, rec.trial = f"nqm/{method}/b{b}", trial
    rec.study_params = {"objective": "steps-to-target:0.02",
                        "space.optimizer.lr": '{"high": 4.0, "kind": "log", "low": 0.01}'}
    return rec


NAMES = {"SGD": "SGD", "EMA": "SGD + EMA γ=0.95"}


def _reference(m: str, b: int) -> T.Optimum:
    """The exact optimum as :func:`_record`'s runs read it (every step evaluated)."""
    best = scaling.closed_form_optimum(NAMES[m], b, DIM, 1.0, 0.02)
    return scaling.closed_form_as_measured(NAMES[m], b, DIM, 1.0, 0.02, tuple(range(0, 10 * int(best.steps))))


def _runs(regret_of: dict[tuple[str, int], float]) -> Runs:
    """One study per (method, B) whose winner needs ``regret`` × the exact optimum's steps as the runs read them."""
    params = {"SGD": {}, "EMA": {"averager": "ema", "averager.decay": 0.95}}
    recs = []
    for (m, b), reg in regret_of.items():
        ref = _reference(m, b)
        recs += [_record(m, b, seed, 0, ref.lr, reg * ref.steps, **params[m]) for seed in SEEDS]
    return Runs("x", "sqlite://", recs, None)


def test_the_optimum_is_read_as_the_runs_read_their_steps():
    """A run whose risk is the closed form's expected risk at the optimum has regret 1: the
    reference interpolates between evaluations as the runs do, and lies within a step below the
    optimum's whole steps (14 whole steps read as 13.5 is 4% apart)."""
    for name, kw in (("SGD", {}), ("precond p=0.5", {"p": 0.5}), ("SGD + EMA γ=0.95", {"ema": 0.95})):
        best = scaling.closed_form_optimum(name, 512, DIM, 1.0, 0.02)
        evals = tuple(range(0, 3 * int(best.steps)))
        ref = scaling.closed_form_as_measured(name, 512, DIM, 1.0, 0.02, evals)
        assert best.steps - 1 <= ref.steps < best.steps
        risk = T.moment_recursion([ref.lr], H, H, 512, **kw).risks(evals[-1])[0]
        assert scaling.steps_to_target([(t, float(risk[t])) for t in evals], 0.02) == pytest.approx(ref.steps)
        # no lr near the optimum's gets there sooner, read the same way
        for lr in (0.9 * ref.lr, 1.1 * ref.lr):
            other = T.moment_recursion([lr], H, H, 512, **kw).risks(evals[-1])[0]
            assert scaling.steps_to_target([(t, float(other[t])) for t in evals], 0.02) >= ref.steps


def test_a_tuned_study_of_the_momentum_is_its_own_method():
    rec = _record("SGD", 64, 0, 0, 0.1, 50, **{"optimizer.momentum": 0.93})
    assert scaling.method_of(rec) == "momentum β=0.93"
    rec.study_params["space.optimizer.momentum"] = '{"high": 0.999, "kind": "log", "low": 0.0}'
    assert scaling.method_of(rec) == "momentum β tuned"
    ema = _record("EMA", 64, 0, 0, 0.1, 50, averager="ema", **{"averager.decay": 0.95})
    assert scaling.series_of(ema) == [("SGD + EMA γ=0.95", scaling.AVG_RISK)]


def test_the_regret_row_states_the_median_and_the_worst_cell(tmp_path):
    runs = _runs({("SGD", 32): 1.02, ("SGD", 256): 1.05, ("EMA", 32): 1.3, ("EMA", 256): 1.09})
    sweep = claims.Sweep(runs)
    regrets = {k: scaling.regret(t, DIM, 1.0, sweep.target) for k, t in sweep.tuned.items()}
    assert regrets == pytest.approx({("SGD", 32): 1.02, ("SGD", 256): 1.05, ("SGD + EMA γ=0.95", 32): 1.3,
                                     ("SGD + EMA γ=0.95", 256): 1.09}, rel=0.01)
    row = claims.tuning_regret(runs, sweep)
    assert row.verdict == claims.CONTRADICTED
    assert "median ×1.07" in row.measured and "worst ×1.30 (SGD + EMA γ=0.95 at B=32)" in row.measured
    good = _runs({("SGD", 32): 1.02, ("SGD", 256): 0.98})
    assert claims.tuning_regret(good, claims.Sweep(good)).verdict == claims.REPRODUCED
    assert any(r.claim == row.claim for r in lecture_claims.evaluate(runs))
    # the report's scaling table shows each cell's exact optimum and its regret
    build.build(runs).write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| exact optimum: steps (lr, β) | read as the runs | regret |" in md
    best = scaling.closed_form_optimum("SGD + EMA γ=0.95", 32, DIM, 1.0, 0.02)
    ref = _reference("EMA", 32)
    assert f"| {best.steps:.0f} (lr={best.lr:.3g}) | {ref.steps:.1f} | ×1.30 |" in md


def _jittered(regret_of: dict[tuple[str, int], float]) -> Runs:
    """As :func:`_runs`, with SGD's seeds 1% apart (so that the paired intervals have a width)."""
    runs = _runs(regret_of)
    recs = []
    for rec in runs.records:
        if rec.params["optimizer"] == "sgd" and "averager" not in rec.params:
            ref = _reference("SGD", rec.batch_size)
            steps = regret_of[("SGD", rec.batch_size)] * ref.steps * (1 + 0.01 * (rec.seed - SEEDS[1]))
            rec = _record("SGD", rec.batch_size, rec.seed, 0, ref.lr, steps)
        recs.append(rec)
    return Runs("x", "sqlite://", recs, None)


def test_the_closed_form_is_held_against_every_paired_interval(tmp_path):
    """Coverage: each paired interval of two methods' steps either contains the closed form's ratio
    or is named; the report states the count."""
    good = _jittered({("SGD", 32): 1.0, ("SGD", 256): 1.0, ("EMA", 32): 1.0, ("EMA", 256): 1.0})
    sweep = claims.Sweep(good)
    assert scaling.coverage(sweep.tuned, DIM, 1.0, sweep.target) == (2, 2, [])
    bad = _jittered({("SGD", 32): 1.0, ("SGD", 256): 1.0, ("EMA", 32): 1.0, ("EMA", 256): 1.3})
    sweep = claims.Sweep(bad)
    inside, total, outside = scaling.coverage(sweep.tuned, DIM, 1.0, sweep.target)
    assert (inside, total) == (1, 2)
    assert len(outside) == 1 and outside[0].startswith("SGD / SGD + EMA γ=0.95 at B=256: measured ×0.")
    build.build(bad).write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "lies inside 1 of the 2 paired 95% intervals" in md and outside[0] in md


def test_each_swept_claim_shows_the_closed_forms_verdict_by_its_own_rule(tmp_path):
    """The claims table's closed-form column: the claim's rule applied to the closed form; where the
    runs say otherwise (EMA 4× slower than its optimum at the smallest B) the row says it disagrees."""
    agree = _jittered({("SGD", 32): 1.0, ("SGD", 256): 1.0, ("EMA", 32): 1.0, ("EMA", 256): 1.0})
    claim = claims.ema_small_batch(agree, claims.Sweep(agree))
    theory = power_nqm.closed_form(agree)[claim.claim]
    assert claim.verdict == theory.verdict == claims.REPRODUCED
    assert "B=32: ×0.69 [0.69, 0.69]" in theory.measured  # the closed form has no spread
    build.build(agree).write(tmp_path / "agree")
    assert f"| {claims.REPRODUCED} | {claims.REPRODUCED} (agrees) |" in (tmp_path / "agree" / "report.md").read_text()
    off = _jittered({("SGD", 32): 1.0, ("SGD", 256): 1.0, ("EMA", 32): 4.0, ("EMA", 256): 1.0})
    claim = claims.ema_small_batch(off, claims.Sweep(off))
    assert claim.verdict == claims.CONTRADICTED
    assert power_nqm.closed_form(off)[claim.claim].verdict == claims.REPRODUCED
    build.build(off).write(tmp_path / "off")
    assert (f"| {claims.CONTRADICTED} | {claims.REPRODUCED}: disagrees with the measured verdict"
            in (tmp_path / "off" / "report.md").read_text())
