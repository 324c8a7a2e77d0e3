"""Fixed costs: a CLI that starts without torch, MLflow or Optuna; few MLflow round trips per run;
a pool that runs in-process when workers would not pay off. (Speed itself: benchmarks/perf/whole.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from suite.engine.loop import RunResult
from suite.exec import pool as pool_module
from suite.exec.phases import Phases
from suite.exec.pool import Pool, switch_to_workers, worth_workers
from suite.registry import LazyCallable, get_registry
from suite.specs.spec import resolve_spec
from suite.tracking.tracker import Tracker

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "mlflow", "optuna", "matplotlib")
PROBE = """
import json, sys
from suite.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in HEAVY if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))


@pytest.mark.parametrize("args, code", [
    (["--help"], 0), (["run", "--help"], 0), (["tune", "--help"], 0), (["worker", "--help"], 0), (["list"], 0),
    (["list", "optimizer", "--format", "json"], 0),
    (["run", "--lr", "abc"], 2), (["run", "--problem", "nope"], 2), (["run", "--set", "optimizer.nope=1"], 2),
    (["run", "--seeds", "x"], 2), (["tune", "--problem", "nope"], 2), (["tune", "--trials", "0"], 2),
])
def test_help_list_and_flag_errors_load_nothing_heavy(workdir, args, code):
    res = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    probe = json.loads(res.stderr.strip().splitlines()[-1])
    assert probe["code"] in (code, None if code == 0 else code), res.stderr
    assert probe["heavy"] == [], f"suite {' '.join(args)} imported {probe['heavy']}"
    assert not (workdir / "mlflow.db").exists()


def test_builtin_factories_are_lazy_and_still_build():
    comp = get_registry().get("optimizer", "sgd")
    assert isinstance(comp.factory, LazyCallable) and isinstance(comp.stacked, LazyCallable)
    from suite.builtin.optimizer_factories import make_sgd

    assert comp.factory.load() is make_sgd
    from suite.builtin.optimizers import DiagonalPreconditioned  # the old import path still works

    assert DiagonalPreconditioned.__module__ == "suite.builtin.optimizer_factories"
    with pytest.raises(ValueError, match="package.module:attribute"):
        LazyCallable("no_colon")


def _spec():
    return resolve_spec(get_registry(), components={"problem": "linreg"}, batch_size=32, epochs=1)


def test_a_run_takes_a_few_mlflow_calls_and_keeps_its_whole_metric_history(workdir):
    tracker = Tracker("buffered", f"sqlite:///{workdir}/mlflow.db", direct=False)  # MLflow's client calls
    calls = []
    real = tracker.client.log_batch
    tracker.client.log_batch = lambda *a, **k: calls.append(k) or real(*a, **k)
    spec = _spec()
    run_id = tracker.start_run(spec, get_registry())
    history = [(step, {"train_loss": 1.0 / (step + 1), "val_loss": 2.0 / (step + 1)}) for step in range(0, 1500, 10)]
    for step, metrics in history:
        tracker.log_metrics(run_id, step, metrics)
    assert len(calls) == 1  # the params; the 300 metric values wait in the buffer
    tracker.finish(run_id, RunResult(spec=spec, history=history, seconds=1.0))
    assert len(calls) == 2  # ... and go with the final tags in one call (MLflow allows 1000 entities)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    got = [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")]
    assert sorted(got) == [(s, m["val_loss"]) for s, m in history]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["suite.status"] == "completed"


def test_a_long_history_is_written_in_batches_within_mlflows_limits(workdir):
    tracker = Tracker("limits", f"sqlite:///{workdir}/mlflow.db", direct=False)  # MLflow's client calls
    sizes = []
    real = tracker.client.log_batch
    tracker.client.log_batch = lambda *a, **k: sizes.append(len(k.get("metrics") or []) + len(k.get("tags") or [])) \
        or real(*a, **k)
    spec = _spec()
    run_id = tracker.start_run(spec, get_registry())
    for step in range(1200):
        tracker.log_metrics(run_id, step, {"a": step, "b": -step})
    tracker.mark(run_id, "interrupted", "stopped")  # an unfinished run keeps what it logged
    assert max(sizes) <= 1000
    assert len(MlflowClient(f"sqlite:///{workdir}/mlflow.db").get_metric_history(run_id, "b")) == 1200


class _Recorder:
    def __init__(self):
        self.done, self.lost = [], []

    def on_event(self, tid, device, kind, args):
        pass

    def on_done(self, tid, result):
        self.done.append((tid, result))

    def on_lost(self, tid, device, why):
        self.lost.append(tid)


def test_workers_pay_off_only_when_the_measured_rest_outweighs_their_start():
    assert not worth_workers(rest_here_s=1.0, start_cost_s=5.0, workers=2)
    assert worth_workers(rest_here_s=100.0, start_cost_s=5.0, workers=2)
    assert not worth_workers(rest_here_s=100.0, start_cost_s=0.0, workers=1)


def test_the_first_tasks_warm_up_counts_as_a_workers_cost_not_as_a_tasks():
    # the first of 6 studies took 1.2 s, the next 0.4 s: 4 more cost 1.6 s here; workers would
    # pay a 1.5 s start and the 0.8 s warm-up again before sharing the 1.6 s
    assert not switch_to_workers([1.2, 0.4], rest=4, start_cost_s=1.5, workers=2)
    # the same warm-up before 40 tasks of 0.4 s: 16 s here against 1.5 + 0.8 + 8 s in two workers
    assert switch_to_workers([1.2, 0.4], rest=40, start_cost_s=1.5, workers=2)
    # one long task measured: it decides (a task that long outweighs its own share of start-up)
    assert switch_to_workers([30.0], rest=255, start_cost_s=1.5, workers=2)
    assert not switch_to_workers([0.5], rest=5, start_cost_s=1.5, workers=2)
    assert not switch_to_workers([0.9], rest=255, start_cost_s=1.5, workers=2)  # shorter than a start: once more
    assert switch_to_workers([0.9, 0.4], rest=254, start_cost_s=1.5, workers=2)
    assert not switch_to_workers([], rest=5, start_cost_s=0.0, workers=2)


def test_an_adaptive_pool_keeps_cheap_tasks_in_process(monkeypatch):
    monkeypatch.setattr(pool_module, "worker_start_cost", lambda: 30.0)
    rec = _Recorder()
    pool = Pool(["cpu", "cpu"], lambda payload, env: payload * 2, adaptive=True)
    pool.run(list(range(6)), rec)
    assert sorted(rec.done) == [(i, 2 * i) for i in range(6)] and not rec.lost
    assert not pool.pids and pool.decision.startswith("in-process")


def test_phases_are_exclusive():
    clock = Phases()
    with clock.phase("training"):
        with clock.phase("tracking"):
            pass
    s = clock.seconds()
    assert s["training"] >= 0 and s["tracking"] >= 0 and s["startup"] > 0
    assert "start-up" in clock.line() and "s in all" in clock.line()


def _schema(db) -> tuple:
    import sqlite3

    with sqlite3.connect(db) as con:
        # (MLflow's migrations order a table's constraints differently from one store to the next)
        tables = sorted((kind, name, sorted(line.strip(" ,") for line in (sql or "").splitlines()))
                        for kind, name, sql in con.execute("SELECT type, name, sql FROM sqlite_master"))
        version = con.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = con.execute("SELECT experiment_id, name, artifact_location FROM experiments").fetchall()
    return tables, version, experiments


def test_a_new_store_is_a_copy_of_the_migrated_empty_one_and_equals_what_mlflow_makes(tmp_path, monkeypatch):
    """The first new sqlite store of an MLflow version is made by MLflow and kept, empty, in the
    cache; new stores are copies of it, indistinguishable from a store MLflow makes (the same
    tables and schema version; a Default experiment with this directory's artifact location).
    An existing store is never replaced."""
    from suite.tracking.template import seed_new_store

    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    made = {}
    for name, own in [("copy", None), ("mlflows", "1")]:
        where = tmp_path / name
        where.mkdir()
        monkeypatch.chdir(where)
        if own:
            monkeypatch.setenv("SUITE_NO_STORE_TEMPLATE", own)
        tracker = Tracker("linreg", f"sqlite:///{where / 'mlflow.db'}")
        tracker.client.create_run(tracker.experiment_id)
        made[name] = _schema(where / "mlflow.db")
    (template,) = (cache / "sgd-suite").iterdir()
    assert _schema(template)[2] == []  # the template holds no experiment
    for name, (tables, version, experiments) in made.items():
        assert tables == made["mlflows"][0] and version == made["mlflows"][1]
        assert experiments == [(0, "Default", str(tmp_path / name / "mlruns" / "0")),
                               (1, "linreg", str(tmp_path / name / "mlruns" / "1"))]
    copy = f"sqlite:///{tmp_path / 'copy' / 'mlflow.db'}"
    assert not seed_new_store(copy)  # an existing store stays as it is
    assert len(MlflowClient(tracking_uri=copy).search_runs(["1"])) == 1


LAZY_DYNAMO = r"""
import sys, torch
import suite.engine.loop  # installs the shims
from suite.engine.lazy_dynamo import CACHE
from torch.optim import SGD, Optimizer
w = torch.nn.Parameter(torch.zeros(3))
opt = SGD([w], lr=0.1)
opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))]})
opt.zero_grad()
state = opt.state_dict()
opt.load_state_dict(state)
before = "torch._dynamo" in sys.modules
(w * 2).sum().backward()
opt.step()  # torch's own step imports torch._dynamo
after = "torch._dynamo" in sys.modules
opt.zero_grad()  # now through torch's real dynamo.disable wrapper, cached in place of the shim
real = getattr(Optimizer.zero_grad.__wrapped__, CACHE)
print(before, after, real.__module__ or "", round(w.tolist()[0], 6), len(opt.param_groups))
"""


def test_building_optimizers_leaves_torch_dynamo_unimported_and_torch_takes_over_once_it_is():
    out = subprocess.run([sys.executable, "-c", LAZY_DYNAMO], capture_output=True, text=True, check=True).stdout
    before, after, wrapper_module, w, groups = out.split()
    assert (before, after) == ("False", "True")
    assert wrapper_module.startswith("torch._dynamo")  # torch's own disable wrapper now, not the suite's shim
    assert (float(w), int(groups)) == (-0.2, 2)  # the optimizer works as ever


LAZY_DYNAMO_FALLBACKS = """
import sys, torch
from suite.engine import lazy_dynamo
from torch.optim import SGD, Optimizer
case = sys.argv[1]
if case == "renamed":  # torch's wrapper caches under another name than the suite looks for
    lazy_dynamo.CACHE = "__dynamo_disable_v2"
print(lazy_dynamo.keep_dynamo_lazy())
w = torch.nn.Parameter(torch.zeros(3))
opt = SGD([w], lr=0.1)
(w * 2).sum().backward()
opt.step()  # imports torch._dynamo
if case == "signature":  # building the real wrapper the suite's way fails (torch builds it another way now)
    import torch._dynamo
    real_disable, calls = torch._dynamo.disable, []
    def disable(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TypeError("disable() got an unexpected keyword argument 'wrapping'")
        return real_disable(*args, **kwargs)
    torch._dynamo.disable = disable
opt.zero_grad()
opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))]})
cached = getattr(Optimizer.zero_grad.__wrapped__, "__dynamo_disable", None)
print(round(w.tolist()[0], 6), len(opt.param_groups), (getattr(cached, "__module__", "") or "").split(".")[1])
"""


@pytest.mark.parametrize("case, shims", [("renamed", "0"), ("signature", "4")])
def test_lazy_dynamo_falls_back_to_torchs_own_path_when_torch_changed(case, shims):
    """Torch's cache renamed: no shim at all. Torch's ``disable`` built another way: the shim hands
    the call to torch's own wrapper, which caches torch's real wrapper; never an exception."""
    out = subprocess.run([sys.executable, "-c", LAZY_DYNAMO_FALLBACKS, case], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    installed, w, groups, wrapper = out.stdout.split()
    assert installed == shims
    assert (float(w), int(groups), wrapper) == (-0.2, 2, "_dynamo")  # torch's own disable wrapper is cached


FAST_EXIT_FALLBACK = """
import atexit, sys, threading
atexit.register(lambda: print("exit handlers ran", flush=True))
del threading._shutdown  # a Python whose private exit hook moved
from suite.cli import _exit_now
_exit_now(3)
"""


def test_the_fast_exit_falls_back_to_pythons_ordinary_exit_when_its_hooks_moved():
    res = subprocess.run([sys.executable, "-c", FAST_EXIT_FALLBACK], capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    assert res.stdout.strip() == "exit handlers ran" and "Traceback" not in res.stderr


ENTRY = """
import atexit, sys
atexit.register(lambda: print("exit handlers ran", flush=True))
sys.argv = ["suite", *sys.argv[1:]]
from suite.cli import entry
entry()
print("not reached")
"""


@pytest.mark.parametrize("args, code, shown", [
    (["--version"], 0, "sgd-suite"),
    (["run", "--problem", "nope"], 2, "Error: unknown problem 'nope'"),
])
def test_the_executable_ends_without_teardown_yet_keeps_exit_codes_output_and_exit_handlers(workdir, args, code,
                                                                                            shown):
    res = subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, timeout=120,
                         cwd=workdir)
    assert res.returncode == code, res.stderr
    assert shown in res.stdout + res.stderr
    assert res.stdout.rstrip().endswith("exit handlers ran") and "not reached" not in res.stdout


def test_the_first_store_of_a_machine_is_made_silently(workdir, tmp_path):
    """With no store template cached yet, MLflow makes one (its migrations log at INFO): a quiet
    run's stderr stays empty. (`suite report` on a missing store makes none: docs/stores.md.)"""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "empty-cache"), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run([sys.executable, "-m", "suite.cli", "run", "--problem", "linreg", "--epochs", "1",
                          "--engine", "loop", "--device", "cpu", "--workers", "1", "--quiet"], cwd=workdir, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert list((tmp_path / "empty-cache" / "sgd-suite").glob("mlflow-*-empty.db"))  # the template was made
