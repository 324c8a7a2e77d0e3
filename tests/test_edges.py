"""Issue 25, item 6: a winner at the edge of its search space is flagged (tune output, MLflow tag,
report); a problem declares the lr stability cap its spaces reach; the report shows the protocol."""

from __future__ import annotations

import types

import numpy as np
import pytest

from suite import Param, hookimpl
from suite.builtin.stability import nqm_lr_cap
from suite.contract import lr_cap_violation
from suite.errors import TuneError
from suite.params import Space
from suite.registry import Registry, get_registry
from suite.report import protocol
from suite.report.document import Document
from suite.report.reader import RunRecord
from suite.tuning import caps, edges
from suite.tuning.space import search_space
from suite.vocab import BEST_AT_EDGE_NONE, TAG_BEST_AT_EDGE, TAG_TRIALS, TAG_TRIALS_REQUESTED
from tests.conftest import runs_of

LR = Space.log(1e-4, 1.0)
UNIFORM = Space.uniform(2.0, 12.0)  # range 10: 5% is 0.5
NQM = {"problem": "nqm", "optimizer": "sgd", "scheduler": "constant", "averager": "none", "sampler": "none"}
PLAIN = {"optimizer.momentum": 0.0, "optimizer.weight_decay": 0.0}  # plain SGD: only the lr tuned


# -- the flag -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("space", "value", "side"), [
    (LR, 1e-4, "low"), (LR, 1.25e-4, "low"), (LR, 1.26e-4, None),  # a factor 1.25 of the low end, inclusive
    (LR, 1.0, "high"), (LR, 0.8, "high"), (LR, 0.79, None), (LR, 0.01, None),
    (UNIFORM, 2.0, "low"), (UNIFORM, 2.5, "low"), (UNIFORM, 2.51, None),  # 5% of the range
    (UNIFORM, 12.0, "high"), (UNIFORM, 11.5, "high"), (UNIFORM, 11.49, None), (UNIFORM, 7.0, None),
    (Space.int(0, 100), 5, "low"), (Space.int(0, 100), 6, None), (Space.int(0, 100), 95, "high"),
    # momentum searches 1-β: β = 0.9989 is 1-β = 1.1e-3, within a factor 1.25 of the low end 1e-3
    (Space.log(1e-3, 1.0, transform="one_minus"), 0.9989, "low"), (Space.log(1e-3, 1.0, transform="one_minus"),
                                                                    0.99, None),
    (Space.log(1e-6, 0.1, off=0.0), 0.0, None), (Space.log(1e-6, 0.1, off=0.0), 0.09, "high"),  # off has no edge
    (Space.choice("a", "b"), "a", None),
])
def test_a_value_is_at_an_edge_within_a_factor_on_log_and_a_fraction_on_linear_spaces(space, value, side):
    assert edges.side(space, value) == side


def test_a_narrow_space_flags_the_nearer_end():
    narrow = Space.log(1.0, 1.2)
    assert edges.side(narrow, 1.05) == "low" and edges.side(narrow, 1.15) == "high"


def test_an_end_that_is_the_parameters_own_bound_is_no_edge():
    """p = 1 (uniform [0, 1]) and β = 0 (1-β = 1, the top of momentum's space) cannot be widened."""
    params = edges.params_of(get_registry(), {"optimizer": "precond"})
    spaces = {"optimizer.lr": LR, "optimizer.p": Space.uniform(0.0, 1.0),
              "optimizer.momentum": Space.log(1e-3, 1.0, transform="one_minus")}
    values = {"optimizer.lr": 0.9, "optimizer.p": 0.99, "optimizer.momentum": 0.0}
    assert [e.flag for e in edges.find(values, spaces, params)] == ["optimizer.lr@high"]
    # without the parameters' bounds every end counts
    assert [e.flag for e in edges.find(values, spaces)] == [
        "optimizer.lr@high", "optimizer.p@high", "optimizer.momentum@high"]


def test_an_lr_space_that_reaches_the_stability_cap_has_no_edge_at_its_top():
    """lecture.yaml's momentum space log:0.005:4 reaches the NQM's cap 2(1+β) = 3.8 at β = 0.9: a winner
    at 3.5 is near the top, but no optimum lies above the cap. A top below the cap is an edge."""
    limits = edges.stability_limits(get_registry(), NQM, {"optimizer.momentum": 0.9, "optimizer.weight_decay": 0.0})
    assert limits == {"optimizer.lr": pytest.approx(3.8)}
    assert edges.find({"optimizer.lr": 3.5}, {"optimizer.lr": Space.log(0.005, 4.0)}, limits=limits) == ()
    (below,) = edges.find({"optimizer.lr": 2.9}, {"optimizer.lr": Space.log(0.005, 3.0)}, limits=limits)
    assert below.flag == "optimizer.lr@high"
    assert edges.stability_limits(get_registry(), {**NQM, "problem": "linreg"}, {}) == {}  # no cap declared


def test_the_advice_widens_no_further_than_the_parameters_own_bounds():
    reg = get_registry()
    (p,) = edges.find({"optimizer.p": 0.21}, {"optimizer.p": Space.uniform(0.2, 0.6)},
                      edges.params_of(reg, {"optimizer": "precond"}))
    assert edges.option(p.widened()) == "uniform:0:0.6"  # not uniform:-0.2:0.6: p >= 0
    (lr,) = edges.find({"optimizer.lr": 0.0011}, {"optimizer.lr": Space.log(1e-3, 0.1)},
                       edges.params_of(reg, {"optimizer": "sgd"}))
    assert edges.option(lr.widened()) == "log:0.0001:0.1"


def test_the_tag_and_the_warning_say_which_parameter_which_end_and_how_to_widen():
    found = edges.find({"optimizer.lr": 0.97, "optimizer.weight_decay": 1.1e-6},
                       {"optimizer.lr": LR, "optimizer.weight_decay": Space.log(1e-6, 0.1, off=0.0)})
    assert edges.tag_value(found) == "optimizer.lr@high,optimizer.weight_decay@low"
    assert edges.tag_value(()) == BEST_AT_EDGE_NONE == "false"
    line = edges.warning([("b256 sgd", found)])
    assert "\n" not in line and line.startswith("Warning: a winner at the edge of the search space")
    assert "optimizer.lr=0.97 at the high end of log:0.0001:1" in line
    assert "--space optimizer.lr=log:0.0001:10" in line and "--space optimizer.weight_decay=log:1e-07:0.1" in line


# -- the stability cap ----------------------------------------------------------------------------
def _spectral_radius(lr: float, optimizer: str, dim: int, params: dict) -> float:
    """The largest |eigenvalue| over the NQM's coordinates of the built-in optimizers' iteration on
    (θ, α·buffer), written from their update rules (torch.optim.SGD, DiagonalPreconditioned)."""
    h = 1.0 / np.arange(1, dim + 1)
    p = params.get("p", 0.0) if optimizer == "precond" else 0.0
    beta, wd = params.get("momentum", 0.0), params.get("weight_decay", 0.0)
    worst = 0.0
    for e in (h + wd) * h ** (-p):
        a = lr * e  # u = α·buffer; buffer' = β buffer + e θ
        if params.get("nesterov"):  # θ' = θ − α(eθ + β buffer')
            m = np.array([[1 - a * (1 + beta), -beta**2], [a, beta]])
        else:  # θ' = θ − α buffer'
            m = np.array([[1 - a, -beta], [a, beta]])
        worst = max(worst, float(np.abs(np.linalg.eigvals(m)).max()))
    return worst


@pytest.mark.parametrize(("optimizer", "params"), [
    ("sgd", {"momentum": 0.0, "weight_decay": 0.0}), ("sgd", {"momentum": 0.9, "weight_decay": 0.0}),
    ("sgd", {"momentum": 0.5, "weight_decay": 0.01, "nesterov": True}),
    ("precond", {"p": 0.5, "momentum": 0.0, "weight_decay": 0.0}),
    ("precond", {"p": 0.75, "momentum": 0.9, "weight_decay": 0.02}),
])
def test_the_nqms_declared_cap_is_where_its_optimizers_stop_being_stable(optimizer, params):
    cap = nqm_lr_cap({"dim": 50, "noise": 1.0}, optimizer, {"nesterov": False, **params})
    assert _spectral_radius(0.999 * cap, optimizer, 50, params) < 1 < _spectral_radius(1.001 * cap, optimizer, 50,
                                                                                         params)


def test_the_nqms_default_lr_space_reaches_twice_the_cap():
    reg = get_registry()
    sgd = search_space(reg, NQM, {**PLAIN, "problem.dim": 32})
    assert (sgd["optimizer.lr"].low, sgd["optimizer.lr"].high) == (1e-4, caps.CAP_FACTOR * 2.0)  # 2/h_max = 2
    heavy = search_space(reg, NQM, {"optimizer.momentum": 0.9, "optimizer.weight_decay": 0.0})
    assert heavy["optimizer.lr"].high == pytest.approx(caps.CAP_FACTOR * 2 * 1.9)  # 2(1+β)/h_max
    precond = search_space(reg, {**NQM, "optimizer": "precond"}, {"optimizer.p": 0.5, "optimizer.momentum": 0.0,
                                                                  "optimizer.weight_decay": 0.0})
    assert precond["optimizer.lr"].high == pytest.approx(caps.CAP_FACTOR * 2.0)  # 2/max h^(1-p)
    # β tuned with the lr: the cap at the end of β's space that allows the most (β = 0.999)
    joint = search_space(reg, NQM, {"optimizer.weight_decay": 0.0})
    assert joint["optimizer.lr"].high == pytest.approx(caps.CAP_FACTOR * 2 * 1.999)
    # the optimum of the example (lr ≈ 1.6 at B = 1024) is inside and not at the edge
    assert edges.side(sgd["optimizer.lr"], 1.74) is None and edges.side(sgd["optimizer.lr"], 1.99) is None
    # --space still wins; a problem without a declared cap keeps the optimizer's space
    given = search_space(reg, NQM, {}, {"optimizer.lr": "log:0.001:0.5"})
    assert (given["optimizer.lr"].low, given["optimizer.lr"].high) == (0.001, 0.5)
    linreg = search_space(reg, {**NQM, "problem": "linreg", "sampler": "shuffle"})
    assert (linreg["optimizer.lr"].low, linreg["optimizer.lr"].high) == (1e-4, 1.0)


def _plugin_registry(lr_cap, family="problem"):
    def problems(register):
        register(name="bowl", factory=lambda ctx, width: None, description="a plugin's quadratic bowl",
                 params=[Param("width", 4.0, "curvature 1/width", low=0.0, low_inclusive=False)],
                 dataset=False, **({"lr_cap": lr_cap} if family == "problem" else {}))

    def optimizers(register):
        register(name="plain", factory=lambda ctx, lr: None, description="a plugin's SGD",
                 params=[Param("lr", 0.01, "lr", low=0.0, low_inclusive=False, space=Space.log(1e-4, 1.0))],
                 **({"lr_cap": lr_cap} if family == "optimizer" else {}))

    plugin = types.new_class("Plugin")()
    plugin.suite_register_problems = hookimpl(problems)
    plugin.suite_register_optimizers = hookimpl(optimizers)
    return Registry.from_entry_points(extra_plugins=[(plugin, "suite-bowl", "0.1")])


def test_a_plugin_problem_declares_its_cap_and_the_tuned_lr_space_reaches_it():
    def bowl_cap(problem, optimizer, params):
        return 2 * problem["width"] if optimizer in ("sgd", "plain") else None

    reg = _plugin_registry(bowl_cap)
    comps = {**NQM, "problem": "bowl"}
    lr = search_space(reg, comps, {"problem.width": 10.0, **PLAIN})["optimizer.lr"]
    assert lr.high == pytest.approx(caps.CAP_FACTOR * 20) and lr.low == 1e-4
    # a top that falls below the declared low end takes the low end down with it
    small = search_space(reg, {**comps, "optimizer": "plain"}, {"problem.width": 1e-5})["optimizer.lr"]
    assert small.high == pytest.approx(caps.CAP_FACTOR * 2e-5) and small.low == pytest.approx(small.high / caps.SPAN)
    # an optimizer the cap does not know keeps its declared space
    assert search_space(reg, {**comps, "optimizer": "adam"})["optimizer.lr"].high == 1.0


def test_a_bad_cap_declaration_is_refused_naming_the_plugin():
    assert "lr_cap is a problem's, and callable" in _plugin_registry(3.0).broken[0].error
    assert "lr_cap is a problem's" in _plugin_registry(lambda *a: 1.0, family="optimizer").broken[0].error

    def failing(problem, optimizer, params):
        raise ZeroDivisionError("width 0")

    with pytest.raises(TuneError, match=r"problem 'bowl' from suite-bowl: its lr_cap failed .*\(ZeroDivisionError"):
        search_space(_plugin_registry(failing), {**NQM, "problem": "bowl"}, PLAIN)
    # the conformance kit's check, at every installed optimizer's defaults
    reg = _plugin_registry(failing)
    assert "raised ZeroDivisionError: width 0" in lr_cap_violation(reg.get("problem", "bowl"),
                                                                   reg.components("optimizer"))
    reg = _plugin_registry(lambda problem, optimizer, params: -1.0)
    assert "lr_cap gave -1.0 for optimizer" in lr_cap_violation(reg.get("problem", "bowl"), reg.components("optimizer"))
    assert lr_cap_violation(get_registry().get("problem", "nqm"), get_registry().components("optimizer")) is None


# -- the report -----------------------------------------------------------------------------------
def _reeval(b: int, trial: int, seed: int, lr: float, best: int) -> RunRecord:
    rec = RunRecord(run_id=f"{b}-{trial}-{seed}", section="scaling_sgd", spec_hash="", status="completed",
                    params={"seed": seed, "batch_size": b, "problem": "nqm", "optimizer": "sgd",
                            "scheduler": "constant", "averager": "none", "sampler": "none",
                            "optimizer.lr": lr, "optimizer.momentum": 0.0}, final={})
    rec.study, rec.trial, rec.study_best = f"nqm/sgd/b{b}", trial, best
    rec.study_params = {"optimizer": "sgd", "scheduler": "constant", "averager": "none", "sampler": "none",
                        "budget": f"steps:{4 * b}", "seeds": 2,
                        "space.optimizer.lr": '{"high": 1.0, "kind": "log", "low": 0.0001}'}
    rec.study_tags = {TAG_TRIALS: "16", TAG_TRIALS_REQUESTED: "16"}
    return rec


def test_the_protocol_table_lists_each_cells_protocol_and_the_winners_at_an_edge():
    # B=64: the winner (trial 1) at lr 0.3, inside; B=1024: the winner (trial 0) at lr 0.95, at the top
    records = [_reeval(b, t, s, lr, best) for b, trials, best in ((64, (0.1, 0.3), 1), (1024, (0.95, 0.5), 0))
               for t, lr in enumerate(trials) for s in (10_000, 10_001, 10_002)]
    found = protocol.study_edges(records)
    assert found == {"nqm/sgd/b64": (), "nqm/sgd/b1024": found["nqm/sgd/b1024"]}
    assert [e.flag for e in found["nqm/sgd/b1024"]] == ["optimizer.lr@high"]
    (row,) = protocol.rows(records)
    assert row == ["scaling_sgd", "sgd-constant-none-none", "64, 1024", "optimizer.lr log:0.0001:1", "16",
                   "B=64: steps:256; B=1024: steps:4096", "1", "2 per trial; 3 fresh × top 2 trials"]
    doc = Document("t")
    protocol.section(doc, records, found)
    md = doc.markdown("f")
    assert "## Tuning protocol" in md and "⚠ 1 winner at the edge of the search space" in md
    assert "scaling_sgd sgd-constant-none-none B=1024 (nqm/sgd/b1024): optimizer.lr=0.95 at the high end" in md


# -- end to end -----------------------------------------------------------------------------------
NARROW_BENCH = """
name: narrow
experiments:
  scaling_sgd:
    description: SGD tuned on an lr space that stops far below the optimum (about 1.5), narrow enough that
      its top quarter lies within the edge band (1.25x)
    problem: {nqm: {dim: 8}}
    optimizer:
      sgd: {momentum: 0.0, weight_decay: 0.0}
    batch_size: [64]
    seeds: 1
    tune:
      objective: steps-to-target:0.1
      trials: 4
      budget: steps:auto
      space: {optimizer.lr: 'log:0.03:0.05'}
      reevaluate: 2
      reevaluate_top: 2
      population: 4
      study_seed: 0
"""


@pytest.mark.slow
def test_a_winner_at_the_edge_is_flagged_in_the_output_on_its_mlflow_run_and_in_the_report(cli, workdir,
                                                                                            mlflow_client):
    """On the NQM a larger lr reaches the target sooner up to ≈ 1.5, so on log:0.03:0.05 the winner sits at
    the top of the space: its 4 trials are one per quarter of the log range (a stratified start), so the
    winner lies in the top quarter, inside the edge band, whatever the draw."""
    (workdir / "narrow.yaml").write_text(NARROW_BENCH)
    out = cli("tune", "narrow.yaml", "--quiet", "--workers", "1").output
    (line,) = [x for x in out.splitlines() if x.startswith("Warning: a winner at the edge")]
    assert "b64 scaling_sgd: sgd-constant-none-shuffle: optimizer.lr=" in line and "high end of log:0.03:0.05" in line
    assert line.endswith("widen the space, e.g. --space optimizer.lr=log:0.03:0.5")
    assert "the studies' table is in the report" in out  # its cell is marked there (below)
    (study,) = runs_of(mlflow_client, "narrow", "tags.`suite.kind` = 'study'")
    assert study.data.tags[TAG_BEST_AT_EDGE] == "optimizer.lr@high"
    md = (workdir / "reports" / "narrow" / "report.md").read_text()
    protocol_part = md.split("## Tuning protocol")[1]
    assert "| scaling_sgd | sgd-constant-none-shuffle | 64 | optimizer.lr log:0.03:0.05 | 4 | steps:" in protocol_part
    assert "| 1 | 1 per trial; 2 fresh × top 2 trials |" in protocol_part
    assert "⚠ 1 winner at the edge of the search space" in protocol_part
    scaling = md.split("## Batch-size scaling")[1].split("##")[0]
    assert "⚠ optimizer.lr at high edge" in scaling
