"""Every bad input gets one line and exit code 2, and nothing is logged or stored.

One table, one row per bad input: the command line, and a piece of text the single stderr line
must hold (the offending flag or key). ``{tmp}`` in an argument is the test's working directory,
where :func:`files` puts the broken benchmark files and stores the rows refer to."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from suite.cli import main

RUN = ["run", "--problem", "linreg", "--epochs", "1", "--device", "cpu"]
TUNE = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", "8", "--trials", "1",
        "--budget", "epochs:1", "--device", "cpu"]
WORKER = ["worker", "--device", "cpu"]

CASES: list[tuple[str, list[str], str]] = [
    # -- suite run: components and the budget
    ("run-problem-unknown", ["run", "--problem", "nope"], "problem"),
    ("run-sampler-unknown", [*RUN, "--sampler", "nope"], "sampler"),
    ("run-optimizer-unknown", [*RUN, "--optimizer", "sgdd"], "sgdd"),
    ("run-scheduler-unknown", [*RUN, "--scheduler", "nope"], "scheduler"),
    ("run-averager-unknown", [*RUN, "--averager", "nope"], "averager"),
    ("run-optimizer-empty-item", [*RUN, "--optimizer", "sgd,,precond"], "sgd,,precond"),
    ("run-batch-size-zero", [*RUN, "--batch-size", "0"], "batch-size"),
    ("run-batch-size-negative", [*RUN, "--batch-size", "-3"], "batch-size"),
    ("run-batch-size-text", [*RUN, "--batch-size", "abc"], "batch-size"),
    ("run-batch-size-fraction", [*RUN, "--batch-size", "2.5"], "batch-size"),
    ("run-batch-size-huge", [*RUN, "--batch-size", "1e30"], "batch"),
    ("run-batch-size-inf", [*RUN, "--batch-size", "inf"], "batch-size"),
    ("run-epochs-zero", ["run", "--epochs", "0"], "epochs"),
    ("run-epochs-negative", ["run", "--epochs", "-1"], "epochs"),
    ("run-epochs-text", ["run", "--epochs", "ten"], "--epochs"),
    ("run-epochs-huge", ["run", "--epochs", "100000000000000000000"], "epochs"),
    ("run-steps-zero", ["run", "--steps", "0"], "steps"),
    ("run-steps-huge", ["run", "--steps", "99999999999999999999999"], "steps"),
    ("run-two-budgets", ["run", "--epochs", "1", "--steps", "1"], "--steps"),
    ("run-eval-every-zero", [*RUN, "--eval-every", "0"], "eval-every"),
    ("run-eval-every-negative", [*RUN, "--eval-every", "-5"], "eval-every"),
    ("run-seed-negative", [*RUN, "--seed", "-1"], "seed"),
    ("run-seed-huge", [*RUN, "--seed", "100000000000000000000000000000"], "seed"),
    ("run-seeds-zero", [*RUN, "--seeds", "0"], "--seeds"),
    ("run-seeds-backwards", [*RUN, "--seeds", "5-2"], "--seeds"),
    ("run-seeds-text", [*RUN, "--seeds", "a,b"], "--seeds"),
    ("run-seeds-huge", [*RUN, "--seeds", "0-100000000000000000000"], "--seeds"),
    ("run-seed-and-seeds", [*RUN, "--seeds", "3", "--seed", "1"], "--seed"),
    # -- values: NaN, ±inf, 0, negative, huge
    ("run-lr-nan", [*RUN, "--lr", "nan"], "optimizer.lr"),
    ("run-lr-inf", [*RUN, "--lr", "inf"], "optimizer.lr"),
    ("run-lr-minus-inf", [*RUN, "--lr", "-inf"], "optimizer.lr"),
    ("run-lr-zero", [*RUN, "--lr", "0"], "optimizer.lr"),
    ("run-lr-negative", [*RUN, "--lr", "-0.1"], "optimizer.lr"),
    ("run-lr-overflow", [*RUN, "--lr", "1e999"], "optimizer.lr"),
    ("run-lr-text", [*RUN, "--lr", "fast"], "optimizer.lr"),
    ("run-lr-empty-item", [*RUN, "--lr", "0.1,,0.2"], "0.1,,0.2"),
    ("run-momentum-one", [*RUN, "--momentum", "1"], "optimizer.momentum"),
    ("run-momentum-nan", [*RUN, "--momentum", "nan"], "optimizer.momentum"),
    ("run-weight-decay-negative", [*RUN, "--weight-decay", "-1"], "optimizer.weight_decay"),
    ("run-weight-decay-inf", [*RUN, "--weight-decay", "inf"], "optimizer.weight_decay"),
    ("run-diverge-factor-one", [*RUN, "--diverge-factor", "1"], "diverge"),
    ("run-diverge-factor-nan", [*RUN, "--diverge-factor", "nan"], "diverge"),
    ("run-diverge-factor-inf", [*RUN, "--diverge-factor", "inf"], "diverge"),
    ("run-diverge-factor-negative", [*RUN, "--diverge-factor", "-2"], "diverge"),
    ("run-target-nan", [*RUN, "--target", "nan"], "--target"),
    ("run-metric-direction", [*RUN, "--metric", "val_acc:up"], "--metric"),
    ("run-metric-empty", [*RUN, "--metric", ":max"], "--metric"),
    ("run-target-inf", [*RUN, "--target", "inf"], "--target"),
    ("run-target-text", [*RUN, "--target", "low"], "--target"),
    # -- --set in every malformed shape
    ("run-set-no-equals", [*RUN, "--set", "optimizer.lr"], "optimizer.lr"),
    ("run-set-no-value", [*RUN, "--set", "optimizer.lr="], "optimizer.lr="),
    ("run-set-no-key", [*RUN, "--set", "=0.1"], "--set"),
    ("run-set-no-param", [*RUN, "--set", "optimizer.=0.1"], "optimizer.=0.1"),
    ("run-set-no-family", [*RUN, "--set", "lr=0.1"], "lr=0.1"),
    ("run-set-unknown-family", [*RUN, "--set", "optimiser.lr=0.1"], "optimiser"),
    ("run-set-unknown-param", [*RUN, "--set", "optimizer.lrr=0.1"], "lrr"),
    ("run-set-bad-type", [*RUN, "--set", "optimizer.nesterov=maybe"], "optimizer.nesterov"),
    ("run-set-nan", [*RUN, "--scheduler", "cosine", "--set", "scheduler.eta_min=nan"], "scheduler.eta_min"),
    ("run-set-inf", [*RUN, "--set", "problem.noise=inf"], "problem.noise"),
    ("run-set-none", [*RUN, "--set", "optimizer.lr=none"], "optimizer.lr"),
    ("run-set-empty-item", [*RUN, "--set", "optimizer.lr=0.1,"], "0.1,"),
    ("run-set-twice-as-axis", [*RUN, "--set", "optimizer.lr=0.1", "--lr", "0.2"], "optimizer.lr"),
    # -- engine, devices
    ("run-engine-unknown", [*RUN, "--engine", "turbo"], "--engine"),
    ("run-stack-size-zero", [*RUN, "--stack-size", "0"], "--stack-size"),
    ("run-device-unknown", [*RUN, "--device", "tpu"], "--device"),
    ("run-device-missing-gpu", [*RUN, "--device", "cuda:7"], "--device"),
    ("run-workers-zero", [*RUN, "--workers", "0"], "--workers"),
    ("run-workers-negative", [*RUN, "--workers", "-2"], "--workers"),
    ("run-workers-text", [*RUN, "--workers", "many"], "--workers"),
    ("run-experiment-empty", [*RUN, "--experiment", ""], "--experiment"),
    ("run-experiment-blank", [*RUN, "--experiment", "  "], "--experiment"),
    ("run-unknown-flag", [*RUN, "--lrr", "0.1"], "--lrr"),
    ("run-flag-without-value", [*RUN, "--lr"], "--lr"),
    ("run-extra-argument", [*RUN, "a.yaml", "b.yaml"], "b.yaml"),
    # -- tracking URIs of every bad shape
    ("run-tracking-plain-path", [*RUN, "--tracking-uri", "some/dir"], "sqlite:///"),
    ("run-tracking-mlruns", [*RUN, "--tracking-uri", "./mlruns"], "sqlite:///"),
    ("run-tracking-file-uri", [*RUN, "--tracking-uri", "file:///{tmp}/mlruns"], "sqlite:///"),
    ("run-tracking-unknown-scheme", [*RUN, "--tracking-uri", "foo://bar"], "--tracking-uri"),
    ("run-tracking-sqlite-memory", [*RUN, "--tracking-uri", "sqlite://"], "--tracking-uri"),
    ("run-tracking-sqlite-no-dir", [*RUN, "--tracking-uri", "sqlite:///{tmp}/nowhere/mlflow.db"], "--tracking-uri"),
    ("run-tracking-sqlite-is-dir", [*RUN, "--tracking-uri", "sqlite:///{tmp}/adir"], "--tracking-uri"),
    ("run-tracking-sqlite-not-db", [*RUN, "--tracking-uri", "sqlite:///{tmp}/notes.txt"], "not an SQLite"),
    ("run-tracking-http-no-host", [*RUN, "--tracking-uri", "http://"], "--tracking-uri"),
    ("run-tracking-http-unreachable", [*RUN, "--tracking-uri", "http://127.0.0.1:9"], "127.0.0.1:9"),
    ("run-tracking-empty", [*RUN, "--tracking-uri", ""], "--tracking-uri"),
    ("run-tracking-blank", [*RUN, "--tracking-uri", " sqlite:///x.db"], "--tracking-uri"),
    # -- storages of every bad shape
    ("run-storage-plain-name", [*RUN, "--storage", "mystore"], "--storage"),
    ("run-storage-no-host", [*RUN, "--storage", "postgresql://user@/db"], "--storage"),
    ("run-storage-unknown-scheme", [*RUN, "--storage", "foo://bar/db"], "--storage"),
    ("run-storage-empty", [*RUN, "--storage", ""], "--storage"),
    ("run-storage-journal-under-file", [*RUN, "--storage", "{tmp}/notes.txt/x.journal"], "journal"),
    ("run-storage-journal-is-dir", [*RUN, "--storage", "{tmp}/adir.journal"], "journal"),
    ("run-storage-sqlite-no-dir", [*RUN, "--storage", "sqlite:///{tmp}/nowhere/optuna.db"], "storage"),
    ("run-storage-force", [*RUN, "--storage", "x.journal", "--force"], "--force"),
    ("run-heartbeat-zero", [*RUN, "--storage", "x.journal", "--heartbeat", "0"], "--heartbeat"),
    ("run-grace-negative", [*RUN, "--storage", "x.journal", "--grace", "-1"], "--grace"),
    ("run-study-blank", [*RUN, "--storage", "x.journal", "--study", " "], "--study"),
    # -- benchmark files: missing, directory, empty, binary, malformed
    ("bench-missing", ["run", "{tmp}/missing.yaml"], "missing.yaml"),
    ("bench-directory", ["run", "{tmp}/adir"], "adir"),
    ("bench-empty", ["run", "{tmp}/empty.yaml"], "empty.yaml"),
    ("bench-blank", ["run", "{tmp}/blank.yaml"], "blank.yaml"),
    ("bench-binary", ["run", "{tmp}/binary.yaml"], "binary.yaml"),
    ("bench-not-utf8", ["run", "{tmp}/latin1.yaml"], "latin1.yaml"),
    ("bench-malformed-yaml", ["run", "{tmp}/malformed.yaml"], "malformed.yaml:3"),
    ("bench-control-characters", ["run", "{tmp}/control.yaml"], "control.yaml"),
    ("bench-a-list", ["run", "{tmp}/list.yaml"], "list.yaml"),
    ("bench-unknown-key", ["run", "{tmp}/unknown_key.yaml"], "optimiser"),
    ("bench-bad-value", ["run", "{tmp}/bad_value.yaml"], "optimizer.lr"),
    ("bench-with-flags", ["run", "{tmp}/good.yaml", "--lr", "0.1"], "--lr"),
    # -- benchmark files with tuned experiments (tune:)
    ("bench-tune-unknown-key", ["run", "{tmp}/tune_key.yaml"], "trails"),
    ("bench-tune-pinned-list", ["run", "{tmp}/tune_list.yaml"], "tune_list.yaml:4"),
    ("bench-tune-pinned-and-searched", ["run", "{tmp}/tune_both.yaml"], "optimizer.lr"),
    ("bench-tune-under-defaults", ["run", "{tmp}/tune_defaults.yaml"], "defaults.tune"),
    ("bench-tune-bad-pruner", ["tune", "{tmp}/tune_pruner.yaml"], "pruner"),
    ("bench-tune-seeds-list", ["run", "{tmp}/tune_seeds.yaml"], "seeds"),
    ("bench-tune-trials-zero", ["tune", "{tmp}/tune_trials.yaml"], "trials"),
    ("bench-tune-bad-objective", ["tune", "{tmp}/tune_objective.yaml"], "tune_objective.yaml:2: experiments.a.tune"),
    ("bench-tune-two-pins", ["run", "{tmp}/tune_pins.yaml"], "optimizer.weight_decay"),
    ("bench-tune-nothing-to-tune", ["tune", "{tmp}/good.yaml"], "tune:"),
    ("bench-tune-with-flags", ["tune", "{tmp}/tune_ok.yaml", "--trials", "3"], "--trials"),
    ("bench-tune-one-study-twice", ["run", "{tmp}/tune_twice.yaml"], "also made by experiment 'a'"),
    ("bench-tune-eval-every-text", ["run", "{tmp}/tune_eval.yaml"], "experiments.a.eval_every"),
    ("bench-tune-two-budgets", ["run", "{tmp}/tune_budgets.yaml"], "exactly one budget"),
    # -- suite tune
    ("tune-problem-unknown", [*TUNE, "--problem", "nope"], "nope"),
    ("tune-optimizer-empty", [*TUNE, "--optimizer", ""], "--optimizer"),
    ("tune-optimizer-empty-item", [*TUNE, "--optimizer", "sgd,,precond"], "--optimizer"),
    ("tune-scheduler-unknown", [*TUNE, "--scheduler", "nope"], "scheduler"),
    ("tune-averager-unknown", [*TUNE, "--averager", "nope"], "averager"),
    ("tune-sampler-unknown", [*TUNE, "--sampler", "nope"], "sampler"),
    ("tune-batch-size-zero", [*TUNE, "--batch-size", "0"], "--batch-size"),
    ("tune-batch-size-text", [*TUNE, "--batch-size", "8,x"], "--batch-size"),
    ("tune-batch-size-huge", [*TUNE, "--batch-size", "100000000000"], "batch"),
    ("tune-trials-zero", [*TUNE, "--trials", "0"], "--trials"),
    ("tune-trials-negative", [*TUNE, "--trials", "-5"], "--trials"),
    ("tune-budget-zero", [*TUNE, "--budget", "epochs:0"], "--budget"),
    ("tune-budget-unit", [*TUNE, "--budget", "hours:1"], "--budget"),
    ("tune-budget-inf", [*TUNE, "--budget", "steps:inf"], "--budget"),
    ("tune-budget-huge", [*TUNE, "--budget", "steps:99999999999999999999"], "--budget"),
    ("tune-objective-unknown", [*TUNE, "--objective", "fastest"], "--objective"),
    ("tune-objective-target-nan", [*TUNE, "--objective", "steps-to-target:nan"], "--objective"),
    ("tune-objective-target-negative", [*TUNE, "--objective", "steps-to-target:-1"], "--objective"),
    ("tune-seeds-zero", [*TUNE, "--seeds", "0"], "--seeds"),
    ("tune-eval-every-zero", [*TUNE, "--eval-every", "0"], "--eval-every"),
    ("tune-pruner-unknown", [*TUNE, "--pruner", "random"], "--pruner"),
    ("tune-study-seed-negative", [*TUNE, "--study-seed", "-1"], "--study-seed"),
    ("tune-study-seed-huge", [*TUNE, "--study-seed", "100000000000000000000"], "--study-seed"),
    ("tune-reevaluate-negative", [*TUNE, "--reevaluate", "-1"], "--reevaluate"),
    ("tune-population-zero", [*TUNE, "--population", "0"], "--population"),
    ("tune-reevaluate-top-zero", [*TUNE, "--reevaluate-top", "0"], "--reevaluate-top"),
    ("tune-set-malformed", [*TUNE, "--set", "momentum=0"], "momentum=0"),
    ("tune-set-nan", [*TUNE, "--set", "optimizer.momentum=nan"], "optimizer.momentum"),
    ("tune-set-inf", [*TUNE, "--set", "optimizer.lr=inf"], "optimizer.lr"),
    ("tune-set-unknown-param", [*TUNE, "--set", "optimizer.beta=0"], "beta"),
    # -- --space in every malformed shape
    ("tune-space-no-equals", [*TUNE, "--space", "optimizer.lr"], "optimizer.lr"),
    ("tune-space-no-family", [*TUNE, "--space", "lr=log:1e-3:1"], "lr=log:1e-3:1"),
    ("tune-space-unknown-family", [*TUNE, "--space", "optimiser.lr=log:1e-3:1"], "optimiser"),
    ("tune-space-unknown-param", [*TUNE, "--space", "optimizer.lrr=log:1e-3:1"], "lrr"),
    ("tune-space-unknown-kind", [*TUNE, "--space", "optimizer.lr=normal:0:1"], "optimizer.lr"),
    ("tune-space-log-zero", [*TUNE, "--space", "optimizer.lr=log:0:1"], "optimizer.lr"),
    ("tune-space-reversed", [*TUNE, "--space", "optimizer.lr=log:1:0.001"], "optimizer.lr"),
    ("tune-space-one-bound", [*TUNE, "--space", "optimizer.lr=uniform:0.1"], "optimizer.lr"),
    ("tune-space-text-bounds", [*TUNE, "--space", "optimizer.lr=uniform:a:b"], "optimizer.lr"),
    ("tune-space-nan", [*TUNE, "--space", "optimizer.lr=log:nan:1"], "optimizer.lr"),
    ("tune-space-inf", [*TUNE, "--space", "optimizer.lr=log:1e-3:inf"], "optimizer.lr"),
    ("tune-space-outside-range", [*TUNE, "--space", "optimizer.lr=uniform:-1:1"], "optimizer.lr"),
    ("tune-space-int-fraction", [*TUNE, "--space", "scheduler.warmup_steps=int:0.5:3"], "warmup_steps"),
    ("tune-space-choice-empty", [*TUNE, "--space", "optimizer.nesterov=choice:"], "optimizer.nesterov"),
    ("tune-space-choice-invalid", [*TUNE, "--space", "optimizer.momentum=choice:0.5,2"], "optimizer.momentum"),
    ("tune-space-and-set", [*TUNE, "--space", "optimizer.lr=log:1e-3:1", "--set", "optimizer.lr=0.1"],
     "optimizer.lr"),
    ("tune-storage-malformed", [*TUNE, "--storage", "nostore"], "--storage"),
    ("tune-storage-no-host", [*TUNE, "--storage", "postgresql:///db"], "--storage"),
    ("tune-heartbeat-zero", [*TUNE, "--heartbeat", "0"], "--heartbeat"),
    ("tune-grace-zero", [*TUNE, "--grace", "0"], "--grace"),
    ("tune-experiment-empty", [*TUNE, "--experiment", ""], "--experiment"),
    ("tune-tracking-plain-path", [*TUNE, "--tracking-uri", "some/dir"], "sqlite:///"),
    ("tune-tracking-unreachable", [*TUNE, "--tracking-uri", "http://127.0.0.1:9"], "127.0.0.1:9"),
    ("tune-tracking-sqlite-is-dir", [*TUNE, "--tracking-uri", "sqlite:///{tmp}/adir"], "--tracking-uri"),
    ("tune-device-unknown", [*TUNE, "--device", "gpu"], "--device"),
    ("tune-workers-zero", [*TUNE, "--workers", "0"], "--workers"),
    ("tune-unknown-flag", [*TUNE, "--trails", "3"], "--trails"),
    # -- suite worker
    ("worker-storage-malformed", [*WORKER, "--storage", "nostore"], "--storage"),
    ("worker-storage-no-host", [*WORKER, "--storage", "mysql://u@/db"], "--storage"),
    ("worker-storage-unknown-driver", [*WORKER, "--storage", "postgresql+nodriver://u@h/db"], "--storage"),
    ("worker-storage-unreachable", [*WORKER, "--storage", "postgresql://u:p@127.0.0.1:9/db"], "storage"),
    ("worker-storage-journal-is-dir", [*WORKER, "--storage", "{tmp}/adir.journal"], "journal"),
    ("worker-heartbeat-zero", [*WORKER, "--heartbeat", "0"], "--heartbeat"),
    ("worker-grace-text", [*WORKER, "--grace", "soon"], "--grace"),
    ("worker-device-unknown", [*WORKER, "--device", "tpu"], "--device"),
    ("worker-workers-zero", [*WORKER, "--workers", "0"], "--workers"),
    ("worker-tracking-plain-path", [*WORKER, "--tracking-uri", "some/dir"], "sqlite:///"),
    ("worker-tracking-unreachable", [*WORKER, "--tracking-uri", "http://127.0.0.1:9"], "127.0.0.1:9"),
    ("worker-study-blank", [*WORKER, "--study", ""], "--study"),
    ("worker-wait-with-value", [*WORKER, "--wait", "yes"], "yes"),
    ("worker-quiet-with-value", [*WORKER, "--quiet", "1"], "1"),
    # -- suite list
    ("list-family-unknown", ["list", "optimiser"], "optimiser"),
    ("list-format-unknown", ["list", "--format", "xml"], "--format"),
    ("list-extra-argument", ["list", "problem", "optimizer"], "optimizer"),
    ("list-unknown-flag", ["list", "--all"], "--all"),
    ("report-unknown-experiment", ["report", "nosuch", "--no-log"], "nosuch"),
    ("report-out-is-a-file", ["report", "nosuch", "--out", "/dev/null"], "--out"),
    ("report-metric-direction", ["report", "nosuch", "--metric", "val_loss:lower"], "--metric"),
    # -- the command itself
    ("command-unknown", ["runn"], "runn"),
]

BENCH_FILES = {
    "empty.yaml": b"",
    "blank.yaml": b"\n\n   \n",
    "binary.yaml": bytes(range(256)) * 4,
    "control.yaml": bytes(range(1, 32)) * 4,
    "latin1.yaml": "name: caf\u00e9\nexperiments: {}\n".encode("latin-1"),
    "malformed.yaml": b"experiments:\n  a: [1, 2\n",
    "list.yaml": b"- a\n- b\n",
    "unknown_key.yaml": b"experiments:\n  a:\n    optimiser: sgd\n",
    "bad_value.yaml": b"experiments:\n  a:\n    problem: linreg\n    epochs: 1\n    params: {optimizer.lr: inf}\n",
    "good.yaml": b"experiments:\n  a:\n    problem: linreg\n    epochs: 1\n",
    "tune_ok.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {trials: 2}\n",
    "tune_key.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {trails: 2}\n",
    "tune_list.yaml": b"experiments:\n  a:\n    epochs: 1\n    params: {optimizer.momentum: [0.0, 0.9]}\n"
                      b"    tune: {trials: 2}\n",
    "tune_both.yaml": b"experiments:\n  a:\n    epochs: 1\n    params: {optimizer.lr: 0.1}\n"
                      b"    tune: {space: {optimizer.lr: 'log:0.01:1'}}\n",
    "tune_defaults.yaml": b"defaults:\n  tune: {trials: 2}\nexperiments:\n  a:\n    epochs: 1\n    tune: {}\n",
    "tune_pruner.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {pruner: fast}\n",
    "tune_seeds.yaml": b"experiments:\n  a:\n    epochs: 1\n    seeds: [1, 2]\n    tune: {trials: 2}\n",
    "tune_trials.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {trials: 0}\n",
    "tune_objective.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {objective: fastest}\n",
    "tune_twice.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {trials: 2}\n"
                       b"  b:\n    epochs: 1\n    tune: {trials: 2}\n",
    "tune_eval.yaml": b"experiments:\n  a:\n    epochs: 1\n    eval_every: x\n    tune: {trials: 2}\n",
    "tune_budgets.yaml": b"experiments:\n  a:\n    epochs: 1\n    steps: 5\n    tune: {trials: 2}\n",
    "tune_pins.yaml": b"experiments:\n  a:\n    epochs: 1\n    optimizer:\n      sgd: {weight_decay: 0.0}\n"
                      b"      precond: {weight_decay: 0.1}\n    tune: {trials: 2}\n",
}


def files(root: Path) -> None:
    """The broken benchmark files and stores that rows refer to as ``{tmp}/NAME``."""
    for name, data in BENCH_FILES.items():
        (root / name).write_bytes(data)
    (root / "adir").mkdir()
    (root / "adir.journal").mkdir()
    (root / "notes.txt").write_text("not a database\n")


def nothing_stored(root: Path) -> list[str]:
    """What a refused command left behind: MLflow runs, experiments or Optuna journal lines."""
    found = []
    for db in root.rglob("*.db"):
        if db.stat().st_size == 0:
            continue
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
            for table in ("runs", "studies"):
                if table in tables and conn.execute(f"select count(*) from {table}").fetchone()[0]:
                    found.append(f"{db.name}: {table}")
    for journal in root.rglob("*.journal"):
        if journal.is_file() and journal.stat().st_size:
            found.append(str(journal))
    return found


@pytest.mark.parametrize(("argv", "names"), [pytest.param(a, n, id=i) for i, a, n in CASES])
def test_bad_input_is_one_line_and_exit_2(workdir, argv, names):
    files(workdir)
    args = [a.replace("{tmp}", str(workdir)) for a in argv]
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert names.replace("{tmp}", str(workdir)).lower() in lines[0].lower()
    assert result.stdout == ""
    assert nothing_stored(workdir) == []


def test_the_table_covers_every_flag_of_every_command():
    import click

    used = {a for _, argv, _ in CASES for a in argv if a.startswith("--")}
    for name, cmd in main.commands.items():
        flags = {opt for p in cmd.params if isinstance(p, click.Option) for opt in p.opts if opt.startswith("--")}
        missing = flags - used - {"--help", "--quiet", "--dry-run", "--submit-only", "--force", "--wait"}
        assert not missing, f"suite {name}: no bad-input case for {sorted(missing)}"
    assert len(CASES) >= 50
