"""`suite tune` end to end: real Optuna journal storage and a real MLflow store in a temp dir."""

from __future__ import annotations

import csv
import math
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from suite.theory import sgd_risk
from tests.conftest import BIN, runs_of, suite_cmd

REQUIRED = ["tune", "--problem", "logistic", "--optimizer", "sgd", "--batch-size", "8,256", "--trials", "12",
            "--budget", "epochs:3"]
LINREG = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--budget", "epochs:2", "--workers", "1", "--quiet"]


def studies(workdir, storage=None):
    """The studies of a storage by name without the settings hash (``problem/variant/bB``)."""
    storage = storage or optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / ".suite" / "optuna.journal")))
    found = {}
    for s in optuna.get_all_study_summaries(storage):
        name, dash, digest = s.study_name.rpartition("-")
        assert dash and len(digest) == 6, s.study_name  # named with a short hash of its settings
        assert name not in found, f"two studies of {name} in one storage"
        found[name] = optuna.load_study(study_name=s.study_name, storage=storage)
    return found


def states(study):
    return [t.state for t in study.trials]


def kinds(client, experiment, kind):
    return runs_of(client, experiment, f"tags.`suite.kind` = '{kind}'")


def children(client, experiment, parent):
    return runs_of(client, experiment, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


@pytest.mark.slow
def test_required_logistic_tuning(cli, workdir, mlflow_client):
    out = cli(*REQUIRED, "--workers", "1", "--study-seed", "0", "--quiet").output
    found = studies(workdir)
    names = ["logistic/sgd-constant-none-shuffle/b8", "logistic/sgd-constant-none-shuffle/b256"]
    assert sorted(found) == sorted(names)
    for study in found.values():
        assert len(study.trials) == 12
        assert set(states(study)) <= {TrialState.COMPLETE, TrialState.PRUNED}
        assert TrialState.COMPLETE in states(study)
    assert sum(states(s).count(TrialState.PRUNED) for s in found.values()) >= 1

    parents = kinds(mlflow_client, "logistic", "study")
    assert sorted(p.data.tags["suite.study"] for p in parents) == sorted(s.study_name for s in found.values())
    for parent in parents:
        study = found[parent.data.tags["suite.study"].rpartition("-")[0]]
        kids = children(mlflow_client, "logistic", parent)
        assert len(kids) == 12 and {k.data.tags["suite.kind"] for k in kids} == {"trial"}
        by_trial = {int(k.data.tags["suite.trial"]): k for k in kids}
        assert sorted(by_trial) == list(range(12))
        for t in study.trials:
            run = by_trial[t.number]
            assert run.data.tags["suite.trial_state"] == t.state.name
            assert run.info.status != "RUNNING"
            # the same params and metrics as any `suite run` run, with the trial's values
            assert run.data.params["optimizer.lr"] == str(t.user_attrs["suite.overrides"]["optimizer.lr"])
            assert run.data.params["problem"] == "logistic" and run.data.params["epochs"] == "3"
            assert {"val_loss", "train_loss", "lr"} <= set(run.data.metrics)
        best = study.best_trial
        assert parent.info.status == "FINISHED"
        assert parent.data.metrics["best_value"] == pytest.approx(best.value)
        best_lr = best.user_attrs["suite.overrides"]["optimizer.lr"]
        assert parent.data.metrics["best.optimizer.lr"] == pytest.approx(best_lr)
        assert parent.data.params["budget"] == "epochs:3" and parent.data.params["objective"] == "final"
        assert "best.json" in {a.path for a in mlflow_client.list_artifacts(parent.info.run_id)}

    # the table: a row per batch size with the best lr/β/λ
    for b, name in ((8, names[0]), (256, names[1])):
        best = found[name].best_trial
        lr = best.user_attrs["suite.overrides"]["optimizer.lr"]
        row = next(line for line in out.splitlines() if line.startswith(f"| {b} |"))
        assert f"{best.value:.4g}" in row and f"lr={lr:.3g}" in row and "β=" in row and "λ=" in row, row
    (report,) = kinds(mlflow_client, "logistic", "tune")
    arts = {a.path for a in mlflow_client.list_artifacts(report.info.run_id)}
    assert {"table.md", "table.csv", "logistic_best_value_vs_batch_size.png",
            "logistic_best_lr_vs_batch_size.png"} <= arts
    with open(mlflow_client.download_artifacts(report.info.run_id, "table.csv")) as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["batch_size"]) for r in rows) == [8, 256]
    assert all(float(r["optimizer.lr"]) > 0 and r["trials"] == "12" for r in rows)


@pytest.mark.slow
def test_nqm_tuned_lr_grows_with_batch_size(cli, workdir):
    """The NQM paper's finding 5: the best constant lr grows with the batch size (until the
    stability cap). The tuned lr is also close to the closed-form optimum."""
    cli("tune", "--problem", "nqm", "--set", "problem.dim=20", "--set", "optimizer.momentum=0",
        "--set", "optimizer.weight_decay=0", "--batch-size", "1,1024", "--budget", "steps:100", "--eval-every", "25",
        "--trials", "16", "--pruner", "none", "--study-seed", "0", "--workers", "1", "--quiet")
    found = studies(workdir)
    lr = {b: found[f"nqm/sgd-constant-none-shuffle/b{b}"].best_trial.user_attrs["suite.overrides"]["optimizer.lr"]
          for b in (1, 1024)}
    assert lr[1024] > 2 * lr[1], lr
    h = [1 / i for i in range(1, 21)]
    grid = [10 ** (-3 + 3 * k / 300) for k in range(301)]
    for b in (1, 1024):
        theory = min(grid, key=lambda a: float(sgd_risk(a, h, h, b, 1.0, 100).sum()))
        assert abs(math.log(lr[b] / theory)) < math.log(2.5), (b, lr[b], theory)


@pytest.mark.slow
def test_rerun_adds_no_trials_and_more_trials_continue(cli, workdir, mlflow_client):
    args = [*LINREG, "--batch-size", "16,64", "--trials", "4"]
    cli(*args)
    assert {n: len(s.trials) for n, s in studies(workdir).items()} == {
        "linreg/sgd-constant-none-shuffle/b16": 4, "linreg/sgd-constant-none-shuffle/b64": 4}
    parents = {p.data.tags["suite.study"]: p.info.run_id for p in kinds(mlflow_client, "linreg", "study")}
    assert {n.rpartition("-")[0] for n in parents} == set(studies(workdir))
    out = cli(*args[:-1], "4", "--quiet").output
    assert [len(s.trials) for s in studies(workdir).values()] == [4, 4]
    assert len(kinds(mlflow_client, "linreg", "trial")) == 8
    assert "| 16 |" in out
    cli(*args[:-1], "6")
    assert [len(s.trials) for s in studies(workdir).values()] == [6, 6]
    again = kinds(mlflow_client, "linreg", "study")
    assert {p.data.tags["suite.study"]: p.info.run_id for p in again} == parents  # the same parents, resumed
    for p in again:
        assert len(children(mlflow_client, "linreg", p)) == 6
        assert p.data.tags["suite.trials_requested"] == "6" and p.info.status == "FINISHED"
    # other settings make other studies (their values would not compare), side by side in one storage
    cli(*[a if a != "epochs:2" else "epochs:3" for a in args[:-1]], "2")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / ".suite" / "optuna.journal")))
    names = optuna.get_all_study_names(storage)
    assert len(names) == 4 and len({n.rpartition("-")[0] for n in names}) == 2
    assert sorted(len(optuna.load_study(study_name=n, storage=storage).trials) for n in names) == [2, 2, 6, 6]
    assert len(kinds(mlflow_client, "linreg", "study")) == 4
    assert len(kinds(mlflow_client, "linreg", "trial")) == 16
    # the same study names in another storage are other studies, with parents of their own
    cli(*args[:-1], "2", "--storage", str(workdir / "other.journal"))
    assert len(kinds(mlflow_client, "linreg", "study")) == 6
    assert len(kinds(mlflow_client, "linreg", "trial")) == 20


@pytest.mark.slow
def test_diverging_trials_do_not_stop_the_study(cli, workdir, mlflow_client):
    url = f"sqlite:///{workdir}/optuna.db"  # an RDB storage, as PostgreSQL would be
    cli(*LINREG, "--batch-size", "32", "--trials", "10", "--space", "optimizer.lr=log:0.01:100",
        "--set", "optimizer.momentum=0", "--set", "optimizer.weight_decay=0", "--study-seed", "1", "--storage", url)
    assert not (workdir / ".suite").exists()
    (study,) = studies(workdir, url).values()
    assert len(study.trials) == 10
    diverged = [t for t in study.trials if t.user_attrs.get("suite.status") == "diverged"]
    assert diverged and all(t.state == TrialState.PRUNED for t in diverged)
    assert all(t.user_attrs["suite.overrides"]["optimizer.lr"] > 0.5 for t in diverged)  # stable below ~1
    assert any(t.state == TrialState.COMPLETE for t in study.trials)
    for t in diverged:
        v = t.user_attrs["suite.value"]
        assert v is None or v > 100
    runs = {int(r.data.tags["suite.trial"]): r for r in kinds(mlflow_client, "linreg", "trial")}
    for t in diverged:
        assert runs[t.number].data.tags["suite.status"] == "diverged"
        assert runs[t.number].data.tags["suite.trial_state"] == "PRUNED"


@pytest.mark.slow
def test_seeds_reproducibility_and_reevaluation(cli, workdir, tmp_path, monkeypatch, mlflow_client):
    args = [*LINREG, "--batch-size", "32", "--trials", "5", "--seeds", "2", "--study-seed", "7", "--reevaluate", "2"]
    out = cli(*args).output
    first = {n: [t.params for t in s.trials] for n, s in studies(workdir).items()}
    assert "±" in out
    (study,) = studies(workdir).values()
    trial_runs = kinds(mlflow_client, "linreg", "trial")
    assert len(trial_runs) == 10  # a run per trial and seed
    for t in study.trials:
        runs = [r for r in trial_runs if r.data.tags["suite.trial"] == str(t.number)]
        assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"] or t.state == TrialState.PRUNED
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(sum(t.user_attrs["suite.values"]) / 2)
    (parent,) = kinds(mlflow_client, "linreg", "study")
    reevals = kinds(mlflow_client, "linreg", "reeval")
    by_trial = {}
    for r in reevals:  # the top 3 trials, each on the same 2 fresh seeds
        by_trial.setdefault(int(r.data.tags["suite.reeval_of"]), []).append(r.data.params["seed"])
    top = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)[:3]
    assert {n: sorted(seeds) for n, seeds in by_trial.items()} == {t.number: ["10000", "10001"] for t in top}
    assert len(top) >= 2
    assert {r.data.tags["mlflow.parentRunId"] for r in reevals} == {parent.info.run_id}
    assert parent.data.metrics["reeval_std"] >= 0 and "reeval_mean" in parent.data.metrics

    other = tmp_path / "again"
    other.mkdir()
    monkeypatch.chdir(other)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}/mlflow.db")
    cli(*args)
    assert {n: [t.params for t in s.trials] for n, s in studies(other).items()} == first


@pytest.mark.slow
def test_two_workers_share_the_studies(workdir, mlflow_client):
    """Two worker processes on one journal storage, logging through the parent (sqlite MLflow)."""
    # two populations of 8 per study, long enough that the second worker is ready before the
    # first has finished both studies
    res = suite_cmd("tune", "--problem", "linreg", "--optimizer", "sgd", "--budget", "epochs:20",
                    "--batch-size", "16,64", "--trials", "16", "--device", "cpu", "--workers", "2",
                    "--pruner", "hyperband", cwd=workdir)
    assert res.returncode == 0, res.stderr
    assert "database is locked" not in res.stderr + res.stdout
    found = studies(workdir)
    assert [len(s.trials) for s in found.values()] == [16, 16]
    workers = {t.user_attrs["suite.worker"] for s in found.values() for t in s.trials}
    assert len(workers) == 2  # both workers ran trials
    for parent in kinds(mlflow_client, "linreg", "study"):
        kids = children(mlflow_client, "linreg", parent)
        assert len(kids) == 16 and all(k.info.status in ("FINISHED", "FAILED") for k in kids)
    # the workers' asks, tells, reports and journal writes are Optuna's own phase of the time: line
    (tune,) = kinds(mlflow_client, "linreg", "tune")
    assert float(tune.data.tags["suite.seconds.optuna"]) > 0
    assert " s optuna, " in next(ln for ln in res.stdout.splitlines() if ln.startswith("time: "))


def test_without_workers_small_studies_run_in_this_process(workdir):
    """No --workers: the studies run here while the measured time per study is below what a
    worker process would take to start (its measured import cost), as suite run's grids do."""
    proc = subprocess.Popen([str(BIN / "suite"), "tune", "--problem", "linreg", "--optimizer", "sgd", "--budget",
                             "epochs:1", "--batch-size", "32,64", "--trials", "2", "--device", "cpu", "--quiet"],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    pids = {t.user_attrs["suite.worker"].rpartition(":")[2] for s in studies(workdir).values() for t in s.trials}
    assert pids == {str(proc.pid)}  # the command itself ran every trial: no worker process was started
    assert all(len(s.trials) == 2 for s in studies(workdir).values())


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--space", "optimizer.lr=log:1"], "malformed space"),
        (["--space", "optimizer.lr"], "malformed --space"),
        (["--space", "problem.n=int:10:100"], "the problem is fixed"),
        (["--space", "optimizer.lr=uniform:-1:1"], "out of range"),
        (["--budget", "epochs"], "malformed --budget"),
        (["--budget", "minutes:3"], "malformed --budget"),
        (["--objective", "fastest"], "malformed --objective"),
        (["--objective", "steps-to-target:x"], "malformed --objective"),
        (["--batch-size", "8,x"], "malformed --batch-size"),
        (["--optimizer", "sgdd"], "did you mean 'sgd'"),
        (["--trials", "0"], "--trials=0"),
        (["--problem", "nqm", "--budget", "epochs:2"], "--budget steps:N"),
        (["--budget", "steps:auto"], "steps:auto needs --objective steps-to-target"),
        (["--reevaluate-top", "0"], "--reevaluate-top=0"),
    ],
)
def test_bad_options_are_one_line_errors(cli, workdir, args, fragment):
    res = cli("tune", "--problem", "linreg", *args, ok=False)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], res.output
    assert not (workdir / ".suite").exists() and not (workdir / "mlflow.db").exists()  # nothing half-written


@pytest.mark.slow
def test_steps_to_target_defaults_on_a_problem_with_data(cli, workdir, mlflow_client):
    """steps-to-target on linreg (no closed form): 3 seeds, steps:auto, evaluations 5% apart, runs
    stopped at the target and completed, the top trials re-evaluated on 5 fresh seeds."""
    out = cli("tune", "--problem", "linreg", "--optimizer", "sgd", "--workers", "1", "--batch-size", "32",
              "--trials", "4", "--objective", "steps-to-target:0.5", "--study-seed", "1").output
    (study,) = studies(workdir).values()
    settings = study.user_attrs["suite.settings"]
    assert settings["seeds"] == 3 and settings["eval_growth"] == 0.05 and "measure" in settings
    budget = int(settings["budget"].removeprefix("steps:"))
    assert budget == max(200, 20 * (800 // 32))  # linreg's 800 training examples, 20 epochs
    runs = kinds(mlflow_client, "linreg", "trial")
    at_target = [t for t in study.trials if t.state == TrialState.COMPLETE and t.value < budget]
    assert at_target
    for t in at_target:
        mine = [r for r in runs if r.data.tags["suite.trial"] == str(t.number)]
        assert len(mine) == 3
        for r in mine:
            assert r.data.tags["suite.status"] == "completed" and r.info.status == "FINISHED"
            assert r.data.tags["suite.reason"].startswith("reached the target 0.5 at step")
            steps = [m.step for m in mlflow_client.get_metric_history(r.info.run_id, "val_loss")]
            assert max(steps) < budget and steps[:21] == list(range(min(21, len(steps))))
    n_complete = sum(t.state == TrialState.COMPLETE for t in study.trials)
    assert len(kinds(mlflow_client, "linreg", "reeval")) == 5 * min(3, n_complete)
    assert "on 5 fresh seeds" in out and "±" in out
