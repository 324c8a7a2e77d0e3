"""Each claim's power (suite/report/power.py): a seeded bootstrap of the runs re-applying the claim's
rule, on synthetic runs with a clear, no and a borderline effect; and the report's power column."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from suite.report import build, claims, lecture_claims, power
from suite.report.reader import Runs
from tests.test_report import _sampling_runs, _study_runs

DRAWS = 100


def _gaps(mean, n, seed=3):
    """Per-seed gaps (with replacement − shuffle): ``mean`` plus unit-sd noise, seeded."""
    return list(mean + np.random.default_rng(seed).standard_normal(n))


def _power(runs):
    return power.power(claims.sampling, runs, draws=DRAWS, seed=1)


def test_a_clear_effect_on_many_seeds_has_power_near_one():
    p = _power(_sampling_runs(_gaps(3.0, 12)))
    assert p.value >= 0.97 and not p.underpowered
    assert p.reproduced == p.decisive  # decisive the right way: reproduced
    assert p.text().startswith(f"{p.value:.2f} [") and "bootstrap over seeds, 100 draws" in p.text()


def test_no_effect_has_low_power():
    p = _power(_sampling_runs(_gaps(0.0, 12)))
    assert p.value <= 0.3 and p.underpowered
    assert [what for what, _ in p.more] == ["seeds"]  # plain runs: no studies to add
    assert p.text().endswith(f"underpowered: 2× seeds {p.more[0][1]:.2f}")


def test_an_underpowered_claim_says_what_twice_the_seeds_would_give():
    # a real but borderline effect: twice the seeds make the verdict decisive more often
    p = _power(_sampling_runs(_gaps(1.0, 6)))
    assert p.underpowered
    ((what, doubled),) = p.more
    assert what == "seeds" and doubled > p.value + 0.1


def test_a_borderline_effect_lies_in_between_and_is_seeded():
    runs = _sampling_runs(_gaps(1.0, 6))
    p = _power(runs)
    assert 0.2 < p.value < 0.9, p
    assert _power(runs) == p  # the same seed, the same draws
    low, high = p.interval
    assert low < p.value < high and high - low < 0.25  # the Monte-Carlo interval of 100 draws


def test_resampled_seeds_are_distinct_and_stay_paired():
    runs = _sampling_runs(_gaps(1.0, 5))
    rng = np.random.default_rng(0)
    for _ in range(5):
        drawn = power.resample(runs, rng)
        by_seed = {}
        for r in drawn.records:
            by_seed.setdefault(r.seed, []).append(r.param("sampler"))
        assert len(by_seed) == 5  # as many distinct seeds as before, duplicates relabelled
        assert all(sorted(v) == ["replacement", "shuffle"] for v in by_seed.values())  # each pair intact
        assert {r.run_id for r in drawn.records} <= {r.run_id for r in runs.records}


def test_skipping_a_draw_by_its_choices_leaves_the_generator_where_the_draw_does():
    """The forked child of the report's draws skips the first half by :meth:`Resampler.choose`
    alone: the draws after it are those one process makes after drawing the first half."""
    studies = {("SGD", 32): [(0.25, 400), (0.5, 600)], ("SGD", 1024): [(1.0, 80), (2.0, 120)]}
    runs = Runs("x", "sqlite://", _sampling_runs(_gaps(1.0, 5)).records + _two_studies(studies).records, None)
    resampler = power.Resampler(runs)
    drawn, skipped = np.random.default_rng(4), np.random.default_rng(4)
    for _ in range(3):
        power.resample(runs, drawn)
        resampler.choose(skipped)
    for _ in range(3):
        a, b = power.resample(runs, drawn), resampler.draw(skipped)
        assert [(r.run_id, r.seed, r.study_index, r.study) for r in a.records] == \
            [(r.run_id, r.seed, r.study_index, r.study) for r in b.records]
        assert {r.trial is None for r in a.records} == {True, False}  # plain and tuned runs both drawn


def _two_studies(studies):
    """The tuned runs of ``studies`` as two independent studies per cell (the second 10% slower)."""
    runs = _study_runs(studies)
    more = []
    for r in runs.records:
        twin = replace(r, study=r.study + "/2", study_index=1,
                       histories={"theory_risk": [(int(t * 1.1), v) for t, v in r.histories["theory_risk"]]})
        more.append(twin)
    return Runs("x", "sqlite://", runs.records + more, None)


def test_tuned_cells_resample_studies_and_seeds_together():
    studies = {(m, b): [(lr, steps), (2 * lr, 1.5 * steps)]
               for (m, b), (lr, steps) in {("SGD", 32): (0.25, 400), ("SGD", 1024): (1.0, 80),
                                           ("mom", 32): (0.1, 390), ("mom", 1024): (0.2, 40)}.items()}
    runs = _two_studies(studies)
    drawn = power.resample(runs, np.random.default_rng(2))
    cells = {}
    for r in drawn.records:
        cells.setdefault((r.section, r.batch_size, r.trial), set()).add((r.study_index, r.study, r.seed))
    for found in cells.values():  # every cell: 2 distinct studies × 3 distinct seeds, the same labels everywhere
        assert len({k for k, _, _ in found}) == 2 and len({s for _, s, _ in found}) == 2
        assert len({seed for _, _, seed in found}) == 3
    assert len({frozenset((k, seed) for k, _, seed in f) for f in cells.values()}) == 1
    p = power.powers(lecture_claims.evaluate, runs, draws=20, seed=0)
    rows = lecture_claims.evaluate(runs)
    at = next(i for i, row in enumerate(rows) if row.claim.startswith("Momentum helps only"))
    assert rows[at].verdict == claims.REPRODUCED
    assert p[at].method == power.STUDIES_METHOD and p[at].value == 1.0
    missing = next(i for i, row in enumerate(rows) if row.experiment.startswith("steady_state"))
    assert p[missing].draws == 0 and p[missing].text() == "n/a (no runs to resample)" and not p[missing].underpowered


def test_report_shows_power_and_flags_an_underpowered_claim():
    runs = _sampling_runs(_gaps(0.0, 6))
    doc = build.build(runs)
    table = next(b for b in doc.blocks if b.kind == "table" and "verdict" in b.header)
    assert "power" in table.header
    col = table.header.index("power")
    row = next(r for r in table.rows if r[0].startswith("Sampling without replacement"))
    assert "underpowered: 2× seeds " in row[col] and "bootstrap over seeds, 200 draws" in row[col]
    assert any(b.kind == "p" and b.text.startswith("Power: the probability") for b in doc.blocks)
    assert "1 underpowered: Sampling without replacement" in doc.summary and "; 2× seeds " in doc.summary
    clear = build.build(_sampling_runs(_gaps(3.0, 12)))
    assert "every claim with runs has power ≥ 0.95" in clear.summary


@pytest.mark.parametrize(("successes", "n", "low", "high"), [(0, 200, 0.0, 0.019), (200, 200, 0.981, 1.0),
                                                             (100, 200, 0.431, 0.569)])
def test_wilson_interval(successes, n, low, high):
    lo, hi = power.wilson(successes, n)
    assert lo == pytest.approx(low, abs=1e-3) and hi == pytest.approx(high, abs=1e-3)


def _steady_runs(scatter, seeds):
    """steady_state runs whose tail risk is the NQM closed form's times a seeded log-normal scatter."""
    from suite import theory
    from tests.test_report import _record

    h = 1.0 / np.arange(1, 11)
    rng = np.random.default_rng(5)
    recs = []
    for seed in range(seeds):
        for lr in (0.1, 0.2, 0.4):
            for b in (1, 4, 16):
                risk = theory.sgd_steady_risk(lr, h, h, b).sum() * np.exp(scatter * rng.standard_normal())
                recs.append(_record("steady_state", seed, {"optimizer.lr": lr, "batch_size": b, "problem.dim": 10},
                                    histories={"val_loss": [(i, float(risk)) for i in range(10)]}))
    return Runs("x", "sqlite://", recs, None)


def test_closed_form_power_of_the_steady_state_claim():
    from suite.report import power_nqm

    tight = power_nqm.steady_state_power(_steady_runs(0.02, 8), draws=DRAWS)
    loose = power_nqm.steady_state_power(_steady_runs(0.5, 3), draws=DRAWS)
    assert tight.value >= 0.97 and tight.reproduced == tight.decisive
    assert loose.value < 0.8 and loose.underpowered and power_nqm.METHOD in loose.text()
    runs = _steady_runs(0.5, 3)
    doc = build.build(runs)
    table = next(b for b in doc.blocks if b.kind == "table" and "verdict" in b.header)
    row = next(r for r in table.rows if getattr(r[1], "text", r[1]).startswith("steady_state"))  # a Link cell
    cell = row[table.header.index("power")]
    assert "bootstrap over seeds" in cell and power_nqm.METHOD in cell
    assert "Steady-state risk" in doc.summary and "underpowered" in doc.summary


def test_sections_on_the_same_seeds_share_a_draw():
    a, b = _sampling_runs(_gaps(1.0, 6)), _sampling_runs(_gaps(2.0, 6, seed=4))
    recs = a.records + [replace(r, section="other", run_id=r.run_id + "-b") for r in b.records]
    drawn = power.resample(Runs("x", "sqlite://", recs, None), np.random.default_rng(7))
    origin = {r.run_id: r.seed for r in recs}

    def mapping(section):
        return {r.seed: origin[r.run_id] for r in drawn.records if r.section == section}

    assert mapping("sampling") == mapping("other")  # label -> the same original seed
    assert len(set(mapping("sampling").values())) < 6  # a real draw with repeats (seeded)
