"""The plugin author's contract: every violation is caught by preflight with one line naming the
component and its distribution; a broken or duplicate plugin leaves the rest working."""

from __future__ import annotations

import types

import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import BatchSampler, RandomSampler

from suite import Param, Problem, hookimpl
from suite.cli import listing
from suite.contract import batch_violation, problem_violations, signature_violation
from suite.engine.loop import check_factory_result, preflight, train
from suite.errors import DuplicateComponentError, PluginContractError, SpecError, UnknownComponentError
from suite.registry import Registry, get_registry
from suite.specs.spec import resolve_spec


def _plugin(**hooks):
    plugin = types.new_class("Plugin")()
    for name, fn in hooks.items():
        setattr(plugin, name, hookimpl(fn))
    return plugin


def _registry(*plugins):
    return Registry.from_entry_points(extra_plugins=[(p, dist, "0.1") for p, dist in plugins])


def _spec(reg, components=None, overrides=None, **kw):
    kw.setdefault("epochs", 1)
    return resolve_spec(reg, components=components or {}, overrides=overrides or {}, batch_size=8, **kw)


# -- bug 1: a sampler yielding single indices --------------------------------------------------
def test_preflight_refuses_a_sampler_of_single_indices_in_one_line():
    def samplers(register):
        register(name="ints", factory=lambda ctx: RandomSampler(range(ctx.n), generator=ctx.generator),
                 description="yields single indices")

    reg = _registry((_plugin(suite_register_samplers=samplers), "bad-dist"))
    with pytest.raises(PluginContractError) as err:
        preflight([_spec(reg, {"sampler": "ints"})], reg)
    msg = str(err.value)
    assert msg.startswith("sampler 'ints' from bad-dist: yields single indices") and "BatchSampler" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("batch, complaint", [
    (3, "single indices"),
    ([], "non-empty"),
    ([0, 1.5], "integers"),
    ([0, 80], "outside the training set [0, 80)"),
    (([0, 1], [1.0]), "1 weights for 2 indices"),
    (([0, 1], [1.0, -1.0]), "negative"),
    ("abc", "integer indices"),
])
def test_every_malformed_batch_is_named(batch, complaint):
    assert complaint in batch_violation(batch, 80)


def test_well_formed_batches_pass():
    assert batch_violation([0, 5, 79], 80) is None
    assert batch_violation(([0, 5], [0.5, 2.0]), 80) is None
    assert batch_violation(torch.tensor([1, 2]), 80) is None


def test_a_problem_whose_optimum_or_true_params_do_not_fit_its_model_is_refused():
    def problems(register):
        def make(ctx):
            X, y = torch.randn(20, 2), torch.randn(20, 1)
            model = torch.nn.Linear(2, 1)
            return Problem(model, torch.nn.MSELoss(), (X[:16], y[:16]), (X[16:], y[16:]),
                           optimum=[torch.zeros(2)], true_params={"w": torch.zeros(2)})

        register(name="misfit", factory=make, description="optimum of the wrong length")

    reg = _registry((_plugin(suite_register_problems=problems), "bad-dist"))
    built_problem = reg.get("problem", "misfit").factory(None)
    wrong = problem_violations(built_problem)
    assert any("optimum has 1 tensors for 2 parameters" in w for w in wrong)
    assert any("true_params has keys ['w'] but the learned parameters are ['bias', 'weight']" in w for w in wrong)
    with pytest.raises(PluginContractError, match=r"^problem 'misfit' from bad-dist: optimum has 1 tensors"):
        preflight([_spec(reg, {"problem": "misfit"})], reg)


# -- bug 2: a sampler on a problem without a data set ------------------------------------------
def test_nqm_records_no_sampler_and_refuses_an_explicit_one():
    reg = get_registry()
    s = _spec(reg, {"problem": "nqm"}, epochs=None, steps=3)
    assert s.sampler == "none" and s.params_of("sampler") == {}
    assert train(s).status == "completed"
    with pytest.raises(SpecError, match="sampler 'replacement' does not apply to problem 'nqm': it has no data set"):
        _spec(reg, {"problem": "nqm", "sampler": "replacement"}, epochs=None, steps=3)
    with pytest.raises(SpecError, match="sampler 'none' is for problems without a data set"):
        _spec(reg, {"problem": "linreg", "sampler": "none"})


def test_nqm_cli_run_logs_sampler_none_and_refuses_a_sampler(cli, mlflow_client):
    cli("run", "--problem", "nqm", "--steps", "4", "--quiet")
    (run,) = mlflow_client.search_runs([mlflow_client.get_experiment_by_name("nqm").experiment_id])
    assert run.data.params["sampler"] == "none"
    res = cli("run", "--problem", "nqm", "--sampler", "replacement", "--steps", "4", ok=False)
    assert res.exit_code == 2 and "does not apply to problem 'nqm'" in res.output


def test_a_data_less_problem_registered_without_dataset_false_is_told_how_to_fix_it():
    def problems(register):
        register(name="quad", factory=lambda ctx: get_registry().get("problem", "nqm").factory(ctx, dim=3, noise=1.0),
                 description="an nqm without dataset=False")

    reg = _registry((_plugin(suite_register_problems=problems), "bad-dist"))
    with pytest.raises(PluginContractError, match="register the problem with dataset=False"):
        preflight([_spec(reg, {"problem": "quad"}, epochs=None, steps=3)], reg)


# -- bugs 3, 4, 5: broken plugins, duplicates, missing @hookimpl -------------------------------
def test_an_unknown_name_mentions_the_broken_plugin_that_may_have_provided_it():
    def lion(register):
        raise ImportError("No module named 'lion_pytorch'")

    reg = _registry((_plugin(suite_register_optimizers=lion), "suite-lion"))
    with pytest.raises(UnknownComponentError) as err:
        reg.get("optimizer", "lion")
    msg = str(err.value)
    assert "a broken plugin may have provided it" in msg and "suite-lion" in msg and "lion_pytorch" in msg
    assert "\n" not in msg


def test_a_duplicate_fails_only_its_name_naming_both_distributions(monkeypatch):
    def twin(register):
        register(name="twin", factory=lambda ctx: None, description="a")

    reg = _registry((_plugin(suite_register_averagers=twin), "pkg-a"),
                    (_plugin(suite_register_averagers=twin), "pkg-b"))
    with pytest.raises(DuplicateComponentError, match="averager 'twin' is registered twice: by pkg-a and by pkg-b"):
        reg.get("averager", "twin")
    assert "twin" not in reg.names("averager") and "ema" in reg.names("averager")
    monkeypatch.setattr(listing, "get_registry", lambda: reg)
    res = CliRunner().invoke(listing.list_components, ["averager"])
    assert res.exit_code == 0 and "ema" in res.stdout
    assert "conflict: averager 'twin' is registered twice: by pkg-a and by pkg-b" in res.stderr


def test_an_invalid_registration_makes_its_plugin_broken_not_the_registry():
    def bad(register):
        register(name="s", factory=lambda ctx: None, description="no interval")
        register(name="fine", factory=lambda ctx: None, description="ok", interval="step")

    reg = _registry((_plugin(suite_register_schedulers=bad), "p"))
    (broken,) = [b for b in reg.broken if b.distribution == "p"]
    assert "interval" in broken.error
    assert "fine" in reg.names("scheduler")


def test_a_hook_without_hookimpl_is_reported_by_the_registry_and_suite_list(monkeypatch):
    plugin = types.new_class("Plugin")()
    plugin.suite_register_optimizers = lambda register: None  # no @hookimpl
    reg = _registry((plugin, "forgetful"))
    (broken,) = [b for b in reg.broken if b.distribution == "forgetful"]
    assert "suite_register_optimizers has no @hookimpl, so it registers nothing" in broken.error
    monkeypatch.setattr(listing, "get_registry", lambda: reg)
    res = CliRunner().invoke(listing.list_components, [])
    assert res.exit_code == 0 and "has no @hookimpl" in res.stderr


# -- bug 6: a factory that does not match its declared params ----------------------------------
def test_a_factory_signature_mismatch_is_caught_before_building():
    def optimizers(register):
        register(name="mismatch", factory=lambda ctx, lr: torch.optim.SGD(ctx.model.parameters(), lr=lr),
                 description="declares rate, takes lr", params=[Param("rate", 0.1, low=0)])

    reg = _registry((_plugin(suite_register_optimizers=optimizers), "bad-dist"))
    comp = reg.get("optimizer", "mismatch")
    assert "does not match its declared hyperparameters (rate)" in signature_violation(comp)
    with pytest.raises(PluginContractError, match=r"^optimizer 'mismatch' from bad-dist: its factory\(ctx, lr\)"):
        preflight([_spec(reg, {"optimizer": "mismatch"})], reg)
    for name in ("sgd", "cosine", "shuffle", "linreg", "ema"):
        assert all(signature_violation(c) is None for c in get_registry().components() if c.name == name)


# -- bug 7: cosmetics --------------------------------------------------------------------------
def test_messages_use_the_right_article_and_list_says_how_schedulers_step(monkeypatch):
    comp = get_registry().get("optimizer", "sgd")
    with pytest.raises(PluginContractError, match="returned dict; an optimizer factory must return"):
        check_factory_result(comp, {})
    res = CliRunner().invoke(listing.list_components, ["scheduler"])
    assert "[stepped every epoch]" in res.stdout
    assert "steps per" not in res.stdout


def test_builtin_samplers_are_batch_samplers_or_weighted():
    s = _spec(get_registry(), {"sampler": "shuffle"})
    from suite.engine.loop import build

    assert isinstance(build(s).sampler, BatchSampler)
