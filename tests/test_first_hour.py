"""A user's first hour: run names that tell runs apart, the MLflow UI on the runs, JSON summaries,
spec.yaml reruns, the notebook API, progress, ``python -m suite``."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

import suite
from suite.api import runs
from suite.errors import SpecError, SuiteError
from suite.progress import Progress
from suite.registry import get_registry
from suite.specs import axes, naming
from suite.tracking import ui
from tests import browser
from tests.conftest import runs_of

GRID = ["run", "--problem", "nqm", "--optimizer", "sgd", "--lr", "0.5,0.1", "--momentum", "0,0.9", "--batch-size", "4",
        "--seeds", "2", "--steps", "20", "--eval-every", "10", "--workers", "1", "--quiet"]


def test_run_names_tell_the_runs_of_a_grid_apart():
    flags = dict(problem="nqm", optimizer="sgd", lr="0.5,0.1", momentum="0,0.9", batch_size="4,64", seeds="2",
                 steps=20)
    specs = runs.plan_flags(get_registry(), flags).specs
    varying = axes.varying_keys(specs)
    names = [naming.run_name(s, varying) for s in specs]
    assert len(set(names)) == len(specs) == 16
    assert "nqm sgd lr=0.5 β=0.9 b4 s0" in names
    assert len({s.name for s in specs}) == 4  # the old names collided across lr and momentum
    # the configuration without the seed: the same for both seeds, different between configurations
    configs = {naming.config_tag(s, varying) for s in specs}
    assert len(configs) == 8
    assert naming.config_tag(specs[0], varying) == naming.config_tag(specs[0].with_seed(7), varying)


def test_progress_is_a_bar_on_a_terminal_one_line_in_a_log_and_a_line_per_run_with_verbose():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    log, verbose_log, tty = io.StringIO(), io.StringIO(), Tty()
    for stream, verbose in ((log, False), (verbose_log, True), (tty, False)):
        p = Progress(3, stream=stream, verbose=verbose)
        p.begin()
        for status in ("completed", "diverged", "failed"):
            p.update("nqm sgd b4 s0", status)
        p.end()
    (line,) = log.getvalue().splitlines()  # a log gets one line, at the end
    assert line.startswith("3/3 runs") and "failed 1" in line and "diverged 1" in line
    lines = verbose_log.getvalue().splitlines()  # --verbose: a line per run
    assert len(lines) == 4 and lines[-1].startswith("3/3") and "failed 1" in lines[-1] and "diverged 1" in lines[-1]
    assert lines[-1].endswith("| nqm sgd b4 s0: failed")
    bar = tty.getvalue()
    assert "\r" in bar and "3/3" in bar and "failed 1" in bar and "\n" not in bar.rstrip("\n")  # redrawn in place


def test_python_dash_m_suite_and_version():
    out = subprocess.run([sys.executable, "-m", "suite", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"sgd-suite, version {suite.__version__}"


def test_notebook_api_refuses_what_the_cli_refuses(workdir):
    with pytest.raises(SpecError, match="unknown option 'lrr'"):
        suite.run(problem="nqm", lrr=0.1)
    with pytest.raises(SuiteError, match="unknown optimizer 'sgdd'"):
        suite.run(problem="nqm", optimizer="sgdd", steps=10)
    with pytest.raises(SpecError, match="--batch-size=0 is out of range"):
        suite.run(problem="nqm", batch_size=[0, 4], steps=10)
    with pytest.raises(SpecError, match="epochs takes one value"):
        suite.run(problem="nqm", epochs=[1, 2])
    assert not (workdir / "mlflow.db").exists()  # nothing logged


@pytest.mark.slow
def test_a_grid_in_mlflow_reads_at_a_glance(cli, workdir, mlflow_client):
    out = json.loads(cli(*GRID, "--format", "json").output)
    assert out["total"] == 8 and out["ran_now"] == 8 and not out["failed"]
    assert out["ui_command"].startswith("mlflow ui ") and f"sqlite:///{workdir}/mlflow.db" in out["ui_command"]
    assert "workflowType=machine_learning" in out["runs_url"] and out["parent_run_id"] in out["run_url"]
    assert {r["mlflow_run_id"] for r in out["runs"]} >= {r.info.run_id for r in runs_of(mlflow_client, "nqm",
                                                                                          "tags.`suite.kind` = 'run'")}

    exp = mlflow_client.get_experiment_by_name("nqm")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp.tags["mlflow.sharedViewState." + out["runs_url"].rpartition("viewStateShareKey=")[2]])
    assert view["groupBy"] == "tag.average.suite.config"
    assert {"metrics.`val_loss`", "metrics.`best_val_loss`", "params.`optimizer.lr`",
            "params.`optimizer.momentum`"} <= set(view["selectedColumns"])

    children = runs_of(mlflow_client, "nqm", "tags.`suite.kind` = 'run'")
    names = [r.info.run_name for r in children]
    assert len(set(names)) == 8 and "nqm sgd lr=0.1 β=0.9 b4 s1" in names
    by_config: dict[str, list] = {}
    for r in children:
        by_config.setdefault(r.data.tags["suite.config"], []).append(r.data.params["seed"])
        m = r.data.metrics
        assert m["best_val_loss"] <= m["val_loss"]
        history = [p.value for p in mlflow_client.get_metric_history(r.info.run_id, "val_loss")]
        assert m["best_val_loss"] == pytest.approx(min(history))
    assert sorted(map(sorted, by_config.values())) == [["0", "1"]] * 4

    (parent,) = runs_of(mlflow_client, "nqm", "tags.`suite.kind` = 'grid'")
    p = parent.data.params
    assert p["command"].startswith("suite run ") and "--problem nqm" in p["command"] and "--lr 0.5,0.1" in p["command"]
    assert p["axis.optimizer.lr"] == "0.5,0.1" and p["axis.optimizer.momentum"] == "0.0,0.9"
    assert p["axis.seed"] == "0,1"
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("| section | configuration |") and "Winner per batch size" in note

    # the spec.yaml logged with a run runs again as it is (already done: nothing new is logged)
    spec_yaml = mlflow_client.download_artifacts(children[0].info.run_id, "spec.yaml", str(workdir))
    text = cli("run", spec_yaml, "--quiet").output
    assert "was already done" in text and children[0].info.run_id in text
    assert len(runs_of(mlflow_client, "nqm", "tags.`suite.kind` = 'run'")) == 8
    edited = workdir / "edited.yaml"
    edited.write_text(open(spec_yaml).read().replace("seed: ", "seed: 1").replace("spec_hash:", "spec_hash: x #"))
    res = cli("run", edited, "--quiet", ok=False)
    assert res.exit_code == 0, res.output
    bad = workdir / "bad.yaml"
    bad.write_text(open(spec_yaml).read().replace("batch_size: 4", "batch_size: 0"))
    res = cli("run", bad, ok=False)
    assert res.exit_code == 2 and res.output.startswith(f"Error: {bad}: --batch-size=0 is out of range")

    # the notebook's view of the same experiment
    df = suite.results("nqm", histories=["val_loss"])
    assert len(df) == 9 and df["name"].is_unique
    assert set(df.loc[df["seed"] == 0, "optimizer.lr"]) == {0.5, 0.1}
    assert (df["best_val_loss"] <= df["val_loss"] + 1e-12).all()
    assert list(df["history"].iloc[0].index[:2]) == [0, 10]


@pytest.mark.slow
@pytest.mark.skipif(browser.CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_mlflow_ui_opens_on_the_runs_table_with_distinct_names(cli, workdir, mlflow_client, tracking_uri):
    out = json.loads(cli(*GRID, "--format", "json").output)
    names = [r.info.run_name for r in runs_of(mlflow_client, "nqm", "tags.`suite.kind` = 'run'")]
    with browser.mlflow_server(tracking_uri, workdir / "server.log") as base:
        page = out["runs_url"].replace(ui.DEFAULT_UI, base)
        text = browser.text_of(browser.chromium(page, workdir / "profile"))
    assert "Run Name" in text and "Token Usage" not in text, text[:2000]  # the runs table, not GenAI's overview
    assert "Group by: suite.config" in text and "best_val_loss" in text and "optimizer.lr" in text
    for name in names:  # every run is listed, under its configuration, by a name of its own
        assert text.count(name) == 1, (name, text[:3000])


@pytest.mark.slow
def test_a_tune_rerun_that_runs_nothing_logs_no_second_report(cli, workdir, mlflow_client):
    args = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--budget", "epochs:1", "--batch-size", "16",
            "--trials", "2", "--workers", "1", "--quiet", "--format", "json"]
    first = json.loads(cli(*args).output)
    (study,) = first["studies"]
    assert study["name"].startswith("linreg/sgd-constant-none-shuffle/b16-")
    assert study["n_complete"] + study["n_pruned"] == 2
    assert first["run_url"].endswith(f"/runs/{first['report_run_id']}?workflowType=machine_learning")
    again = json.loads(cli(*args).output)
    assert again["report_run_id"] == first["report_run_id"]
    assert len(runs_of(mlflow_client, "linreg", "tags.`suite.kind` = 'tune'")) == 1
    more = json.loads(cli(*[a if a != "2" else "3" for a in args]).output)  # one more trial: a new report
    assert more["report_run_id"] != first["report_run_id"]
    assert len(runs_of(mlflow_client, "linreg", "tags.`suite.kind` = 'tune'")) == 2
