"""The report's exact NQM optima: every tuned method's closed form, each tuned cell's regret
(measured steps over the exact optimum's) and the claims row with the median and worst regret."""

from __future__ import annotations

import numpy as np
import pytest

from suite import theory as T
from suite.report import build, claims, lecture_claims, scaling
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


def _runs(regret_of: dict[tuple[str, int], float]) -> Runs:
    """One study per (method, B) whose winner needs ``regret`` × the exact optimum's steps."""
    params = {"SGD": {}, "EMA": {"averager": "ema", "averager.decay": 0.95}}
    names = {"SGD": "SGD", "EMA": "SGD + EMA γ=0.95"}
    recs = []
    for (m, b), reg in regret_of.items():
        best = scaling.closed_form_optimum(names[m], b, DIM, 1.0, 0.02)
        recs += [_record(m, b, seed, 0, best.lr, reg * best.steps, **params[m]) for seed in SEEDS]
    return Runs("x", "sqlite://", recs, None)


def test_a_tuned_study_of_the_momentum_is_its_own_method():
    rec = _record("SGD", 64, 0, 0, 0.1, 50, **{"optimizer.momentum": 0.93})
    assert scaling.method_of(rec) == "momentum β=0.93"
    rec.study_params["space.optimizer.momentum"] = '{"high": 0.999, "kind": "log", "low": 0.0}'
    assert scaling.method_of(rec) == "momentum β tuned"
    ema = _record("EMA", 64, 0, 0, 0.1, 50, averager="ema", **{"averager.decay": 0.95})
    assert scaling.series_of(ema) == [("SGD + EMA γ=0.95", scaling.AVG_RISK)]


def test_the_regret_row_states_the_median_and_the_worst_cell(tmp_path):
    runs = _runs({("SGD", 32): 1.02, ("SGD", 256): 1.05, ("EMA", 32): 1.3, ("EMA", 256): 1.08})
    sweep = claims.Sweep(runs)
    regrets = {k: scaling.regret(t, DIM, 1.0, sweep.target) for k, t in sweep.tuned.items()}
    assert regrets == pytest.approx({("SGD", 32): 1.02, ("SGD", 256): 1.05, ("SGD + EMA γ=0.95", 32): 1.3,
                                     ("SGD + EMA γ=0.95", 256): 1.08}, rel=0.01)
    row = claims.tuning_regret(runs, sweep)
    assert row.verdict == claims.CONTRADICTED
    assert "median ×1.06" in row.measured and "worst ×1.30 (SGD + EMA γ=0.95 at B=32)" in row.measured
    good = _runs({("SGD", 32): 1.02, ("SGD", 256): 0.98})
    assert claims.tuning_regret(good, claims.Sweep(good)).verdict == claims.REPRODUCED
    assert any(r.claim == row.claim for r in lecture_claims.evaluate(runs))
    # the report's scaling table shows each cell's exact optimum and its regret
    build.build(runs).write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| exact optimum: steps (lr, β) | regret |" in md
    best = scaling.closed_form_optimum("SGD + EMA γ=0.95", 32, DIM, 1.0, 0.02)
    assert f"| {best.steps:.0f} (lr={best.lr:.3g}) | ×1.30 |" in md
