"""Every bad input gets one line and exit code 2, in bounded time and memory, and nothing is
written: no MLflow store, no ``.suite/``, no ``reports/``, not a file more than the case was given.

One table, one row per bad input: the command line, and a piece of text the single stderr line
must hold (the offending flag, key or file). ``{tmp}`` in an argument is the case's own working
directory, where the benchmark files, spec files and stores the row names are put; rows of
:data:`ENV_CASES` also set environment variables, rows of :data:`PLUGIN_CASES` install a hostile
plugin package (:data:`HOSTILE_PLUGIN`) first.

Each case runs as its own process under a memory limit and a hang guard: the test process imports
the suite once, then forks one child per case (two at a time), which sets ``RLIMIT_AS`` to
1 GiB above what it already maps, arms ``alarm()`` (:data:`HANG_GUARD_S`, generous: it catches a
hang, it is not a speed claim), and runs the ``suite`` command in-process."""

from __future__ import annotations

import os
import re
import resource
import signal
import sqlite3
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from suite.cli import main

RUN = ["run", "--problem", "linreg", "--epochs", "1", "--device", "cpu"]
TUNE = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", "8", "--trials", "1",
        "--budget", "epochs:1", "--device", "cpu"]
WORKER = ["worker", "--device", "cpu"]
GB = 1024**3
HANG_GUARD_S = 120
PARALLEL = 2
THOUSAND = ",".join(f"{(i + 1) / 1000:g}" for i in range(1000))
MOMENTA = ",".join(f"{i / 1001:.6f}" for i in range(1000))

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
    ("bench-tune-studies-zero", ["tune", "{tmp}/tune_studies.yaml"], "tune_studies.yaml:4: experiments.a.tune.studies"),
    ("bench-tune-studies-text", ["run", "{tmp}/tune_studies_text.yaml"], "experiments.a.tune.studies"),
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
    ("tune-studies-zero", [*TUNE, "--studies", "0"], "--studies"),
    ("tune-studies-text", [*TUNE, "--studies", "three"], "--studies"),
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


# -- issue 28: bounded work, paths, small things
CASES += [
    ("run-grid-too-large", [*RUN, "--lr", THOUSAND, "--momentum", MOMENTA, "--weight-decay", THOUSAND],
     "SUITE_MAX_RUNS"),
    ("run-grid-too-large-dry-run", [*RUN, "--dry-run", "--lr", THOUSAND, "--momentum", MOMENTA,
                                    "--weight-decay", THOUSAND], "1,000,000,000 runs"),
    ("bench-grid-too-large", ["run", "{tmp}/huge_grid.yaml", "--dry-run"], "huge_grid.yaml"),
    ("bench-yaml-billion-laughs", ["run", "{tmp}/laughs.yaml"], "laughs.yaml:"),
    ("bench-yaml-recursive-alias", ["run", "{tmp}/cycle.yaml"], "recursive alias"),
    ("bench-yaml-deep", ["run", "{tmp}/deep.yaml"], "deep.yaml:1: nested deeper"),
    ("bench-yaml-8mb", ["run", "{tmp}/big.yaml"], "big.yaml"),
    ("run-problem-n-huge", [*RUN, "--set", "problem.n=1e11"], "n=100000000000"),
    ("run-problem-d-huge", [*RUN, "--set", "problem.d=1e9"], "d=1000000000"),
    ("run-lr-above-float32", [*RUN, "--lr", "1e308"], "float32"),
    ("spec-params-list", ["run", "{tmp}/spec_params_list.yaml"], "spec_params_list.yaml:3: params"),
    ("spec-params-number", ["run", "{tmp}/spec_params_number.yaml"], "spec_params_number.yaml:3: params"),
    ("spec-problem-list", ["run", "{tmp}/spec_problem_list.yaml"], "spec_problem_list.yaml:2: problem"),
    ("run-metric-unknown", [*RUN, "--metric", "val_los"], "val_loss"),
    ("run-target-negative", [*RUN, "--target", "-1"], "--target"),
    ("run-lr-underscore", [*RUN, "--lr", "1_0"], "optimizer.lr"),
    # -- 30+ more: numbers as Python reads them but people do not write them
    ("run-epochs-underscore", ["run", "--epochs", "1_0"], "--epochs"),
    ("run-seed-other-digits", [*RUN, "--seed", "\u0661"], "--seed"),
    ("run-batch-size-underscore", [*RUN, "--batch-size", "1_6"], "batch-size"),
    ("run-seeds-underscore", [*RUN, "--seeds", "1_0"], "--seeds"),
    ("run-diverge-factor-underscore", [*RUN, "--diverge-factor", "1_0"], "--diverge-factor"),
    ("run-target-zero", [*RUN, "--target", "0"], "--target"),
    ("run-lr-rounds-to-zero", [*RUN, "--lr", "1e-50"], "rounds to 0"),
    ("run-momentum-above-float32", [*RUN, "--scheduler", "cosine", "--set", "scheduler.eta_min=1e300"],
     "scheduler.eta_min"),
    ("run-nqm-dim-huge", ["run", "--problem", "nqm", "--steps", "1", "--set", "problem.dim=1e12"], "dim="),
    ("run-mlp-too-wide", ["run", "--problem", "mlp", "--epochs", "1", "--set", "problem.width=1000000",
                          "--set", "problem.depth=100"], "width=1000000"),
    ("run-mlp-too-deep", ["run", "--problem", "mlp", "--epochs", "1", "--set", "problem.depth=5000"], "depth"),
    ("run-metric-unknown-dry-run", [*RUN, "--metric", "val_acc:max", "--dry-run"], "val_acc"),
    ("tune-lr-above-float32", [*TUNE, "--set", "optimizer.lr=1e308"], "float32"),
    ("tune-budget-other-digits", [*TUNE, "--budget", "steps:\u00b2"], "--budget"),
    ("tune-space-underscore", [*TUNE, "--space", "optimizer.lr=log:1_0:2_0"], "optimizer.lr"),
    ("tune-objective-target-underscore", [*TUNE, "--objective", "steps-to-target:1_0"], "--objective"),
    ("tune-trials-underscore", [*TUNE, "--trials", "1_0"], "--trials"),
    ("worker-workers-underscore", [*WORKER, "--workers", "1_0"], "--workers"),
    ("run-workers-huge", [*RUN, "--workers", "1000000000000"], "--workers"),
    ("worker-workers-huge", [*WORKER, "--workers", "1000000000000"], "--workers"),
    ("run-device-index-digits", [*RUN, "--device", "cuda:" + "9" * 5000], "--device"),
    ("tune-budget-digits", [*TUNE, "--budget", "steps:" + "9" * 5000], "--budget"),
    ("report-name-too-long-for-a-file", ["report", "y" * 300, "--no-log"], "y" * 300),
    ("tune-trials-huge", [*TUNE, "--trials", "1000000000"], "SUITE_MAX_RUNS"),
    ("tune-seeds-huge", [*TUNE, "--seeds", "1000000000"], "SUITE_MAX_RUNS"),
    ("tune-reevaluate-huge", [*TUNE, "--reevaluate", "1000000000"], "SUITE_MAX_RUNS"),
    ("tune-studies-huge", [*TUNE, "--studies", "1000000000"], "SUITE_MAX_RUNS"),
    ("bench-tune-studies-huge", ["tune", "{tmp}/tune_studies_huge.yaml"], "SUITE_MAX_RUNS"),
    ("bench-tune-trials-huge", ["tune", "{tmp}/tune_huge.yaml"], "SUITE_MAX_RUNS"),
    # -- benchmark files
    ("bench-sub-grid-too-large", ["run", "{tmp}/huge_sub_grid.yaml"], "huge_sub_grid.yaml"),
    ("bench-yaml-int-too-long", ["run", "{tmp}/digits.yaml"], "digits.yaml:1"),
    ("bench-yaml-bad-date", ["run", "{tmp}/date.yaml"], "date.yaml:1"),
    ("bench-yaml-complex-key", ["run", "{tmp}/complex_key.yaml"], "keys must be names"),
    ("bench-name-nul", ["run", "{tmp}/name_nul.yaml"], "name_nul.yaml:1: name"),
    ("bench-name-too-long", ["run", "{tmp}/name_long.yaml"], "name_long.yaml:1: name"),
    ("bench-name-a-list", ["run", "{tmp}/name_list.yaml"], "name_list.yaml:1: name"),
    ("bench-not-a-regular-file", ["run", "/dev/zero"], "/dev/zero"),
    ("bench-seeds-underscore", ["run", "{tmp}/seeds_underscore.yaml"], "seeds"),
    ("report-benchmark-laughs", ["report", "{tmp}/laughs.yaml"], "laughs.yaml"),
    # -- spec.yaml
    ("spec-param-value-list", ["run", "{tmp}/spec_value_list.yaml"], "params.optimizer.lr"),
    ("spec-epochs-list", ["run", "{tmp}/spec_epochs_list.yaml"], "epochs"),
    ("spec-problem-number", ["run", "{tmp}/spec_problem_number.yaml"], "5"),
    ("spec-unknown-key", ["run", "{tmp}/spec_unknown.yaml"], "colour"),
    ("spec-lr-above-float32", ["run", "{tmp}/spec_lr_huge.yaml"], "float32"),
    ("spec-experiment-blank", ["run", "{tmp}/spec_ok.yaml", "--experiment", " "], "--experiment"),
    # -- stores: what MLflow refuses, the direct path refuses before anything is written (the store
    # faults that need a read-only mount or a full disk are in tests/test_store_errors.py)
    ("run-experiment-too-long", [*RUN, "--experiment", "x" * 10_000], "at most 500"),
    ("tune-experiment-too-long", [*TUNE, "--experiment", "x" * 10_000], "at most 500"),
    ("run-uri-two-slashes", [*RUN, "--tracking-uri", "sqlite://mlflow.db"], "not a valid SQLite URL"),
    ("tune-uri-two-slashes", [*TUNE, "--tracking-uri", "sqlite://mlflow.db"], "not a valid SQLite URL"),
    ("run-uri-read-only", [*RUN, "--tracking-uri", "sqlite:///mlflow.db?mode=ro"], "read-only"),
    ("run-uri-read-only-sqlite-uri", [*RUN, "--tracking-uri", "sqlite:///file:mlflow.db?mode=ro&uri=true"],
     "read-only"),
    ("run-uri-immutable", [*RUN, "--tracking-uri", "sqlite:///mlflow.db?immutable=1"], "read-only"),
    ("tune-uri-read-only", [*TUNE, "--tracking-uri", "sqlite:///mlflow.db?mode=ro"], "read-only"),
    ("report-no-store", ["report", "nosuch"], "no tracking store"),
]

# (id, environment variables, command line, text of the line)
ENV_CASES: list[tuple[str, dict[str, str], list[str], str]] = [
    ("env-max-runs-text", {"SUITE_MAX_RUNS": "many"}, [*RUN], "SUITE_MAX_RUNS"),
    ("env-max-runs-zero", {"SUITE_MAX_RUNS": "0"}, [*RUN], "SUITE_MAX_RUNS"),
    ("env-max-runs-exceeded", {"SUITE_MAX_RUNS": "2"}, [*RUN, "--lr", "0.1,0.2,0.3"], "limit of 2"),
    ("env-max-runs-bench-total", {"SUITE_MAX_RUNS": "3"}, ["run", "{tmp}/two_experiments.yaml"], "limit of 3"),
    ("env-max-yaml-bytes", {"SUITE_MAX_YAML_BYTES": "10"}, ["run", "{tmp}/good.yaml"], "SUITE_MAX_YAML_BYTES"),
    ("env-max-yaml-bytes-negative", {"SUITE_MAX_YAML_BYTES": "-1"}, ["run", "{tmp}/good.yaml"],
     "SUITE_MAX_YAML_BYTES"),
    ("env-tracking-uri-plain-path", {"MLFLOW_TRACKING_URI": "some/dir"}, [*RUN], "sqlite:///"),
    ("env-storage-malformed", {"SUITE_STORAGE": "nostore"}, [*RUN], "--storage"),
]

# (id, command line, text of the line): with HOSTILE_PLUGIN installed
PLUGIN_CASES: list[tuple[str, list[str], str]] = [
    ("plugin-name-with-slash", [*RUN, "--problem", "up/../evil"], "up/../evil"),
    ("plugin-factory-refuses", [*RUN, "--problem", "refuses"], "cannot be built"),
    ("plugin-factory-wrong-type", [*RUN, "--problem", "wrongtype"], "wrongtype"),
    ("plugin-default-out-of-range", [*RUN, "--optimizer", "baddefault"], "baddefault"),
    ("plugin-lr-above-its-float32", [*RUN, "--optimizer", "anylr", "--set", "optimizer.lr=1e300"], "float32"),
]

HOSTILE_PLUGIN = """\
import torch
from suite import Param, hookimpl


def _refuses(ctx, **kw):
    raise ValueError("this problem refuses to be built")


def _wrong(ctx, **kw):
    return "not a problem"


def _sgd(ctx, lr):
    return torch.optim.SGD(ctx.model.parameters(), lr=lr)


@hookimpl
def suite_register_problems(register):
    register(name="up/../evil", factory=_refuses, description="a name that is a path")
    register(name="refuses", factory=_refuses, description="a factory that raises ValueError")
    register(name="wrongtype", factory=_wrong, description="a factory that returns a string")


@hookimpl
def suite_register_optimizers(register):
    register(name="anylr", factory=_sgd, description="no upper bound on lr", params=[Param("lr", 0.1, "", low=0.0)])
    register(name="baddefault", factory=_sgd, description="a default outside its own range",
             params=[Param("lr", 5.0, "", low=0.0, high=1.0)])
"""

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
    "tune_studies.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {trials: 2, studies: 0}\n",
    "tune_studies_text.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {studies: three}\n",
    "tune_studies_huge.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {trials: 2, studies: 1000000000}\n",
    "tune_objective.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {objective: fastest}\n",
    "tune_twice.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {trials: 2}\n"
                       b"  b:\n    epochs: 1\n    tune: {trials: 2}\n",
    "tune_eval.yaml": b"experiments:\n  a:\n    epochs: 1\n    eval_every: x\n    tune: {trials: 2}\n",
    "tune_budgets.yaml": b"experiments:\n  a:\n    epochs: 1\n    steps: 5\n    tune: {trials: 2}\n",
    "tune_pins.yaml": b"experiments:\n  a:\n    epochs: 1\n    optimizer:\n      sgd: {weight_decay: 0.0}\n"
                      b"      precond: {weight_decay: 0.1}\n    tune: {trials: 2}\n",
    "huge_grid.yaml": ("experiments:\n  a:\n    problem: linreg\n    epochs: 1\n    params:\n"
                       f"      optimizer.lr: [{THOUSAND}]\n      optimizer.momentum: [{MOMENTA}]\n"
                       f"      optimizer.weight_decay: [{THOUSAND}]\n").encode(),
    "huge_sub_grid.yaml": ("experiments:\n  a:\n    epochs: 1\n    optimizer:\n      sgd:\n"
                           f"        lr: [{THOUSAND}]\n        momentum: [{MOMENTA}]\n").encode(),
    "laughs.yaml": ("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
                    + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10))
                    + "experiments: {e: {epochs: 1, params: {optimizer.lr: *a9}}}\n").encode(),
    "cycle.yaml": b"experiments: &a {e: *a}\n",
    "tune_huge.yaml": b"experiments:\n  a:\n    epochs: 1\n    tune: {trials: 1000000000}\n",
    "deep.yaml": b"experiments: " + b"[" * 20000 + b"]" * 20000 + b"\n",
    "big.yaml": b"experiments:\n" + b"  # padding to eight megabytes ................................\n" * 130_000,
    "digits.yaml": b"experiments: {e: {epochs: " + b"9" * 5000 + b"}}\n",
    "date.yaml": b"experiments: {e: {epochs: 2001-13-45}}\n",
    "complex_key.yaml": b"experiments:\n  ? [a, b]\n  : {epochs: 1}\n",
    "name_nul.yaml": b'name: "a\\0b"\nexperiments: {e: {epochs: 1}}\n',
    "name_long.yaml": b"name: " + b"x" * 600 + b"\nexperiments: {e: {epochs: 1}}\n",
    "name_list.yaml": b"name: [a, b]\nexperiments: {e: {epochs: 1}}\n",
    "seeds_underscore.yaml": b"experiments: {e: {epochs: 1, seeds: '1_0'}}\n",
    "two_experiments.yaml": b"experiments:\n  a: {epochs: 1, params: {optimizer.lr: [0.1, 0.2]}}\n"
                            b"  b: {epochs: 1, params: {optimizer.lr: [0.3, 0.4]}}\n",
    "spec_ok.yaml": b"spec_hash: x\nproblem: linreg\nparams: {}\nepochs: 1\n",
    "spec_params_list.yaml": b"spec_hash: x\nproblem: linreg\nparams: [1, 2]\nepochs: 1\n",
    "spec_params_number.yaml": b"spec_hash: x\nproblem: linreg\nparams: 5\nepochs: 1\n",
    "spec_problem_list.yaml": b"spec_hash: x\nproblem: [linreg, nqm]\nparams: {}\nepochs: 1\n",
    "spec_value_list.yaml": b"spec_hash: x\nproblem: linreg\nparams: {optimizer.lr: [0.1, 0.2]}\nepochs: 1\n",
    "spec_epochs_list.yaml": b"spec_hash: x\nproblem: linreg\nparams: {}\nepochs: [1]\n",
    "spec_problem_number.yaml": b"spec_hash: x\nproblem: 5\nparams: {}\nepochs: 1\n",
    "spec_unknown.yaml": b"spec_hash: x\nproblem: linreg\nparams: {}\nepochs: 1\ncolour: red\n",
    "spec_lr_huge.yaml": b"spec_hash: x\nproblem: linreg\nparams: {optimizer.lr: 1.0e+300}\nepochs: 1\n",
}


FILE_ARG = re.compile(r"\{tmp\}/([^/\s]+)")
DIRS = ("adir", "adir.journal")


@dataclass
class Case:
    """One row: its id, command line, the text its line must hold, and what it runs under."""

    id: str
    argv: list[str]
    names: str
    env: dict[str, str] = field(default_factory=dict)
    plugin: bool = False


@dataclass
class Outcome:
    """What one case's process did: its exit (or the signal that ended it), its output, and
    the files its working directory held before and after."""

    code: int | None
    signal: int | None
    stdout: str
    stderr: str
    before: set[str]
    after: set[str]
    root: Path


ALL = ([Case(i, a, n) for i, a, n in CASES] + [Case(i, a, n, env=e) for i, e, a, n in ENV_CASES]
       + [Case(i, a, n, plugin=True) for i, a, n in PLUGIN_CASES])


def files(root: Path, argv: list[str]) -> None:
    """The benchmark files, spec files and stores that ``argv`` names as ``{tmp}/NAME``."""
    for arg in argv:
        for name in FILE_ARG.findall(arg):
            if name in BENCH_FILES:
                (root / name).write_bytes(BENCH_FILES[name])
            elif name in DIRS:
                (root / name).mkdir(exist_ok=True)
            elif name == "notes.txt":
                (root / name).write_text("not a database\n")


def install_plugin(root: Path) -> Path:
    """:data:`HOSTILE_PLUGIN` as an installed distribution (a module and its ``.dist-info``
    with a ``suite.plugins`` entry point) in a folder to put on ``sys.path``."""
    site = root / "site"
    info = site / "hostile_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "hostile_plugin.py").write_text(HOSTILE_PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[suite.plugins]\nhostile = hostile_plugin\n")
    return site


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _warm() -> None:
    """Import once, in the test process, what the commands import, so each forked case starts
    at once (a child inherits the imported modules)."""
    import mlflow  # noqa: F401
    import optuna  # noqa: F401
    import optuna.storages.journal  # noqa: F401
    import sqlalchemy  # noqa: F401
    import torch  # noqa: F401

    import suite.api.runs  # noqa: F401
    import suite.api.tuning  # noqa: F401
    import suite.api.work  # noqa: F401
    import suite.engine.loop  # noqa: F401
    import suite.exec.devices  # noqa: F401
    import suite.report.build  # noqa: F401
    import suite.stores  # noqa: F401
    import suite.tracking.tracker  # noqa: F401
    from suite.registry import get_registry

    get_registry()


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _child(case: Case, root: Path, site: Path) -> None:
    """In the forked process: run ``case`` in ``root`` under the memory limit and the hang guard,
    then end the process with the command's exit code (never returning into pytest)."""
    code = 70
    try:
        out = open(root.parent / f"{root.name}.out", "w")  # noqa: SIM115 - the process ends with os._exit
        err = open(root.parent / f"{root.name}.err", "w")  # noqa: SIM115
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = out, err
        os.chdir(root)
        for key in ("SUITE_STORAGE", "SUITE_MAX_RUNS", "SUITE_MAX_YAML_BYTES"):
            os.environ.pop(key, None)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
        os.environ.update(case.env)
        if case.plugin:
            from suite.registry import get_registry

            sys.path.insert(0, str(site))
            get_registry.cache_clear()
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + GB, hard))
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # whatever the test process set: the alarm ends the child
        signal.alarm(HANG_GUARD_S)
        args = [a.replace("{tmp}", str(root)) for a in case.argv]
        try:
            main.main(args, prog_name="suite", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported as the case's output, never raised into pytest
        traceback.print_exc()
        code = 71
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def run_cases(cases: list[Case], base: Path) -> dict[str, Outcome]:
    """Fork one process per case, :data:`PARALLEL` at a time; wait for each (the hang guard
    ends a hung one)."""
    _warm()
    site = install_plugin(base)
    pending, running, done = list(cases), {}, {}
    while pending or running:
        while pending and len(running) < PARALLEL:
            case = pending.pop(0)
            root = base / case.id
            root.mkdir()
            files(root, case.argv)
            before = listing(root)
            pid = os.fork()
            if pid == 0:
                _child(case, root, site)
            running[pid] = (case, root, before)
        pid, status = os.waitpid(-1, 0)
        if pid not in running:
            continue
        case, root, before = running.pop(pid)
        done[case.id] = Outcome(
            code=os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
            signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            stdout=(base / f"{case.id}.out").read_text(errors="replace"),
            stderr=(base / f"{case.id}.err").read_text(errors="replace"),
            before=before, after=listing(root), root=root,
        )
    return done


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome]:
    """Every selected case run once, in forked processes."""
    wanted = {item.callspec.id for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")}
    return run_cases([c for c in ALL if c.id in wanted], tmp_path_factory.mktemp("bad_input"))


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


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in ALL])
def test_bad_input_is_one_line_and_exit_2(outcomes, case):
    out = outcomes[case.id]
    assert out.signal is None, (f"ended by signal {out.signal}"
                                + (" (the hang guard)" if out.signal == signal.SIGALRM else ""), out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.code == 2, (out.code, out.stdout, out.stderr)
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("Error: ")
    assert case.names.replace("{tmp}", str(out.root)).lower() in lines[0].lower()
    assert out.stdout == ""
    written = out.after - out.before
    assert not written, f"written: {sorted(written)}"
    assert not {"mlflow.db", ".suite", "reports"} & out.after
    assert nothing_stored(out.root) == []


def test_the_table_covers_every_flag_of_every_command():
    import click

    used = {a for c in ALL for a in c.argv if a.startswith("--")}
    for name, cmd in main.commands.items():
        flags = {opt for p in cmd.params if isinstance(p, click.Option) for opt in p.opts if opt.startswith("--")}
        missing = flags - used - {"--help", "--quiet", "--verbose", "--dry-run", "--submit-only", "--force",
                                   "--wait"}
        assert not missing, f"suite {name}: no bad-input case for {sorted(missing)}"
    assert len(CASES) >= 50


def test_the_table_holds_the_issue_cases_and_thirty_more():
    """Issue 28's cases are rows, and at least thirty more beside them and the earlier table."""
    issue = {"run-grid-too-large", "run-grid-too-large-dry-run", "bench-grid-too-large", "bench-yaml-billion-laughs",
             "bench-yaml-recursive-alias", "bench-yaml-deep", "bench-yaml-8mb", "run-problem-n-huge",
             "run-problem-d-huge", "run-lr-above-float32", "spec-params-list", "spec-params-number",
             "spec-problem-list", "run-metric-unknown", "run-target-negative", "run-lr-underscore",
             "run-experiment-too-long", "bench-name-too-long", "run-uri-two-slashes", "run-uri-read-only"}
    ids = [c.id for c in ALL]
    assert len(ids) == len(set(ids))
    assert issue <= set(ids)
    assert len(ids) >= 200 + len(issue) + 30
