"""Beyond one machine: several `suite worker` processes share grids (and tuning studies) through
a real PostgreSQL (Optuna RDB storage) and a real `mlflow server` with a PostgreSQL backend, or
through the local default storage (journal file + sqlite MLflow store).

PostgreSQL comes from ``SUITE_TEST_PG_URL`` (a role allowed to create databases; CI sets it with
``scripts/pg-start``): every test makes its own databases and drops them afterwards.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from suite import owners
from suite.distributed.worker import Worker, WorkerContext, register_kind
from suite.registry import get_registry
from suite.specs.spec import resolve_spec
from suite.stores import open_storage
from suite.vocab import STUDY_KIND as KIND
from suite.vocab import STUDY_READY as READY
from suite.vocab import TRIAL_KEY as KEY
from suite.vocab import TRIAL_RUN_ID as RUN_ID
from tests.browser import start_mlflow_server, stop_mlflow_server
from tests.conftest import runs_of

BIN = Path(sys.executable).parent
PG_URL = os.environ.get("SUITE_TEST_PG_URL")
if not PG_URL and os.environ.get("SUITE_REQUIRE_PG"):  # CI sets both: there these tests must run
    raise RuntimeError("SUITE_REQUIRE_PG is set but SUITE_TEST_PG_URL is not: run scripts/pg-start first")
needs_pg = pytest.mark.skipif(
    not PG_URL,
    reason="no PostgreSQL: set SUITE_TEST_PG_URL=postgresql://user:pw@127.0.0.1:5432/db "
    "(`eval \"$(scripts/pg-start)\"; export SUITE_TEST_PG_URL=$SUITE_PG_URL`; CI does this)",
)
HEARTBEAT = ["--heartbeat", "1", "--grace", "4"]


# -- services ---------------------------------------------------------------------------------
def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def _with_db(url: str, db: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=db).render_as_string(hide_password=False)


@pytest.fixture
def pg_database():
    """A factory of fresh PostgreSQL databases (URLs), dropped after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"suite_test_{uuid.uuid4().hex[:10]}"
        _admin(f'CREATE DATABASE "{name}"')
        made.append(name)
        return _with_db(PG_URL, name)

    yield make
    for name in made:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on a free 127.0.0.1 port, PostgreSQL backend, served artifacts."""
    if not PG_URL:
        pytest.skip("no PostgreSQL: set SUITE_TEST_PG_URL (CI does)")
    db = f"suite_test_mlflow_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{db}"')
    root = tmp_path_factory.mktemp("mlflow-server")
    proc = None
    try:
        proc, uri = start_mlflow_server(["--workers", "1", "--backend-store-uri", _with_db(PG_URL, db),
                                         "--serve-artifacts", "--artifacts-destination", str(root / "artifacts")],
                                        root / "server.log", cwd=root)
        yield uri
    finally:
        if proc is not None:
            stop_mlflow_server(proc)
        _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


# -- helpers ----------------------------------------------------------------------------------
def grid_specs(n_seeds: int, epochs: int = 4):
    """Two batch sizes x ``n_seeds`` seeds of a small linreg problem (about a second each)."""
    registry = get_registry()
    return [
        resolve_spec(registry, batch_size=b, seed=s, epochs=epochs, overrides={"problem.n": 2000})
        for b in (16, 32) for s in range(n_seeds)
    ]


def start_worker(storage: str, cwd: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # workers log where the study says
    return subprocess.Popen(
        [str(BIN / "suite"), "worker", "--storage", storage, "--device", "cpu", "--workers", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env,
    )


def finish(workers: list[subprocess.Popen], timeout: float = 240) -> dict[int, int]:
    """Wait for the workers; return pid -> trials it reports having run (exit 0 required)."""
    done: dict[int, int] = {}
    for w in workers:
        out, _ = w.communicate(timeout=timeout)
        if w.returncode == -signal.SIGKILL:
            continue
        assert w.returncode == 0, f"worker {w.pid} exited {w.returncode}:\n{out}"
        m = re.search(r"^worker \S+:(\d+): (\d+) trial", out, re.M)
        assert m, out
        done[int(m.group(1))] = int(m.group(2))
    return done


def check_grid(storage_url: str, study_name: str, tracking_uri: str, specs, *, killed: int = 0,
               killed_runs: int | None = None):
    """Every spec ran exactly once: one COMPLETE trial and one FINISHED MLflow child run per
    spec hash, nothing left waiting or running; ``killed`` trials failed and were retried, and
    ``killed_runs`` (default: ``killed``) of their runs were cut short (KILLED)."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["suite.spec_hash"] for t in complete) == sorted(s.hash for s in specs)
    assert states[TrialState.FAIL] == killed
    assert len(trials) == len(specs) + killed

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(study.user_attrs["suite.experiment"])
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = study.user_attrs["suite.parent_run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["suite.spec_hash"] for r in finished) == sorted(s.hash for s in specs)
    assert {t.user_attrs[RUN_ID] for t in complete} == {r.info.run_id for r in finished}
    others = [r for r in children if r.info.status != "FINISHED"]
    assert len(others) == (killed if killed_runs is None else killed_runs), others
    assert all(r.info.status == "KILLED" for r in others), [
        (r.info.status, r.data.tags.get("suite.status")) for r in others
    ]
    assert client.get_run(parent).info.status == "FINISHED"
    # metrics and artifacts reached the store
    assert all("val_loss" in r.data.metrics for r in finished)
    arts = {a.path for a in client.list_artifacts(finished[0].info.run_id)}
    assert {"spec.yaml", "curves.png"} <= arts
    return study


STARTED_LINE = re.compile(rb"^\[[^\]]+\] .+: started trial\(s\) \d")  # WorkerContext.started
HANG_GUARD_S = 300  # catches a hang; not a speed claim


def first_to_start(workers: list[subprocess.Popen]) -> subprocess.Popen:
    """The first worker to say that a batch of its trials has started (``started trial(s)``: their
    runs are in the store, RUNNING), read from the workers' output as it comes: an event, not a
    poll of the store. The lines read here are not in what :func:`finish` gets later."""
    by_fd = {w.stdout.fileno(): w for w in workers}  # type: ignore[union-attr]
    pending = {fd: b"" for fd in by_fd}
    while pending:
        ready, _, _ = select.select(list(pending), [], [], HANG_GUARD_S)
        assert ready, f"no worker started a trial in {HANG_GUARD_S} s"
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # this worker ended without starting anything
                del pending[fd]
                continue
            *lines, pending[fd] = (pending[fd] + chunk).split(b"\n")
            if any(STARTED_LINE.search(line) for line in lines):
                return by_fd[fd]
    raise AssertionError("every worker ended before one said it had started a trial")


# -- the tests --------------------------------------------------------------------------------
GRID_FLAGS = ["--seeds", "4", "--batch-size", "16,32", "--epochs", "4", "--set", "problem.n=2000"]
TUNE_FLAGS = ["--problem", "linreg", "--optimizer", "sgd", "--scheduler", "constant", "--batch-size", "16,64",
              "--trials", "4", "--pruner", "none", "--set", "problem.n=2000"]


def tune_studies(budget: str) -> list[str]:
    """The names (with their settings hash) that `suite tune TUNE_FLAGS --budget BUDGET` gives its studies."""
    from suite.registry import get_registry
    from suite.tuning.budget import Budget
    from suite.tuning.objective import Objective
    from suite.tuning.plan import plan_studies
    from suite.tuning.space import variants

    one = variants({"optimizer": ["sgd"], "scheduler": ["constant"], "averager": ["none"], "sampler": ["shuffle"]})
    plans = plan_studies(get_registry(), problems=["linreg"], variant_list=one, batch_sizes=[16, 64],
                         budget=Budget.parse(budget), objective=Objective("final"), seeds=1,
                         fixed={"problem.n": "2000"})
    return [p.name for p in plans]


TUNE_STUDIES = tune_studies("epochs:2")


def check_tune(storage_url: str, names, tracking_uri: str, n_trials: int) -> int:
    """Each study holds exactly ``n_trials`` counted trials (one per slot), each with exactly one
    finished MLflow run under the study's parent; returns how many trials were lost (their
    worker died: failed, retried, their run KILLED)."""
    from suite.tuning.studies import counted

    client = MlflowClient(tracking_uri=tracking_uri)
    lost_total = 0
    for name in names:
        study = optuna.load_study(study_name=name, storage=open_storage(storage_url))
        trials = study.get_trials(deepcopy=False)
        states = Counter(t.state for t in trials)
        assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, (name, states)
        done = [t for t in trials if counted(t)]
        assert sorted(t.user_attrs["suite.slot"] for t in done) == list(range(n_trials)), name
        lost = [t for t in trials if not counted(t)]
        assert all(t.state == TrialState.FAIL and "suite.duplicate_of" not in t.user_attrs for t in lost)
        lost_total += len(lost)
        parent = study.user_attrs["suite.parent_run_id"]
        exp = client.get_experiment(client.get_run(parent).info.experiment_id)
        kids = [r for r in client.search_runs([exp.experiment_id], max_results=1000)
                if r.data.tags.get("mlflow.parentRunId") == parent and r.data.tags.get("suite.kind") == "trial"]
        finished = [r for r in kids if r.info.status in ("FINISHED", "FAILED")]
        assert sorted(int(r.data.tags["suite.trial"]) for r in finished) == sorted(t.number for t in done), name
        killed = [r for r in kids if r.info.status not in ("FINISHED", "FAILED")]
        assert sorted(int(r.data.tags["suite.trial"]) for r in killed) == sorted(t.number for t in lost), name
        assert all(r.info.status == "KILLED" for r in killed)
    return lost_total


@pytest.mark.slow
@needs_pg
def test_three_workers_share_studies_and_a_grid_through_postgres_and_mlflow_server(
        tmp_path, cli, pg_database, mlflow_server):
    storage = pg_database()
    specs = grid_specs(4)
    name = "grid-shared"
    where = ["--tracking-uri", mlflow_server, "--storage", storage]
    # workers first: they wait for the named studies, then all three race for their trials
    studies = [a for n in [name, *TUNE_STUDIES] for a in ("--study", n)]
    workers = [start_worker(storage, tmp_path, *studies, *HEARTBEAT) for _ in range(3)]
    submit = [*GRID_FLAGS, "--experiment", "scale", *where, "--study", name, "--submit-only"]
    assert "enqueued in" in cli("run", *submit).output
    assert "already in" in cli("run", *submit).output, "submitting the same grid again joins it"
    tune = [*TUNE_FLAGS, "--budget", "epochs:2", "--experiment", "scale-tune", *where]
    assert "2 studies ready" in cli("tune", *tune, "--submit-only").output
    cli("tune", *tune, "--submit-only")  # submitted twice: still 4 trials per study
    done = finish(workers)
    study = check_grid(storage, name, mlflow_server, specs)
    assert check_tune(storage, TUNE_STUDIES, mlflow_server, 4) == 0
    assert sum(done.values()) == len(specs) + 2 * 4
    by_worker = Counter(t.user_attrs["suite.worker"].rsplit(":", 1)[1] for t in study.get_trials())
    assert {int(p) for p in by_worker} <= {w.pid for w in workers}
    assert len(by_worker) >= 2, f"the trials were not shared: {by_worker}"
    # the same tune command, not submit-only: nothing left to run, it writes the report
    out = cli("tune", *tune, "--device", "cpu", "--workers", "1").output
    assert "| 16 |" in out and "| 64 |" in out
    assert check_tune(storage, TUNE_STUDIES, mlflow_server, 4) == 0
    other = [*GRID_FLAGS[:-2], "--experiment", "scale", *where, "--study", name, "--submit-only"]
    result = cli("run", *other, ok=False)
    assert result.exit_code == 2 and "holds another grid" in result.output


def kill_one_worker_mid_trial(tmp_path, cli, storage: str, tracking: str, kind: str, worker_args=()):
    """Three workers on a grid or on tuning studies; SIGKILL one while its MLflow runs are
    running (a worker may hold several trials at once: a stack of a grid's specs, a population of
    a study's trials). Its trials are failed and retried: every spec / slot still runs exactly once."""
    # budgets long enough (seconds per stack or population) that the victim is seen mid-run
    if kind == "grid":
        specs = grid_specs(3, epochs=60)
        names = ["grid-kill"]
        cli("run", "--batch-size", "16,32", "--seeds", "3", "--epochs", "60", "--set", "problem.n=2000",
            "--experiment", "scale-kill", "--tracking-uri", tracking, "--storage", storage, "--study", names[0],
            "--submit-only")
    else:
        names = tune_studies("epochs:60")
        cli("tune", *TUNE_FLAGS, "--budget", "epochs:60", "--experiment", "scale-kill-tune", "--tracking-uri",
            tracking, "--storage", storage, "--submit-only")
    workers = [start_worker(storage, tmp_path, *[a for n in names for a in ("--study", n)], *worker_args)
               for _ in range(3)]
    client = MlflowClient(tracking_uri=tracking)
    store = open_storage(storage)
    # the victim: the first worker to say its trials' runs have started (a population may take a
    # whole study, so which worker gets work at all depends on the order in which they start); it
    # holds exactly those trials then, and the budgets keep their runs going far longer than the kill takes
    victim = first_to_start(workers)
    owner = owners.label(victim.pid)
    victim.send_signal(signal.SIGKILL)
    done = finish(workers)
    assert victim.pid not in done
    # What the victim held when it died: its trials that were failed (and retried). A run of one
    # may have ended just before the kill, its trial not yet told: the retry takes that run over.
    lost = {name: [t for t in optuna.load_study(study_name=name, storage=store).get_trials(
        deepcopy=False, states=(TrialState.FAIL,)) if t.user_attrs.get("suite.worker", "").endswith(
        f":{victim.pid}")] for name in names}
    lost = {name: failed for name, failed in lost.items() if failed}
    n_lost = sum(map(len, lost.values()))
    assert n_lost >= 1
    # its runs that the kill cut short; a run that ended FAILED (e.g. diverged: a pruned trial,
    # which counts) had ended before the kill, as check_tune's "finished" says
    cut = [r for e in client.search_experiments() for r in client.search_runs(
        [e.experiment_id], f"tags.`suite.owner` = '{owner}'") if r.info.status not in ("FINISHED", "FAILED")]
    assert cut or kind == "grid"
    if kind == "grid":
        study = check_grid(storage, names[0], tracking, specs, killed=n_lost, killed_runs=len(cut))
        ended = [t.user_attrs[RUN_ID] for t in lost[names[0]] if RUN_ID in t.user_attrs and t.user_attrs[RUN_ID]
                 not in {r.info.run_id for r in cut}]
        taken_over = [t.user_attrs[RUN_ID] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        assert set(ended) <= set(taken_over)
    else:
        assert check_tune(storage, names, tracking, 4) == n_lost
        assert sorted((r.data.tags["suite.study"], int(r.data.tags["suite.trial"])) for r in cut) == sorted(
            (name, t.number) for name, ts in lost.items() for t in ts)
    for name, failed in lost.items():
        trials = optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False)
        for one in failed:
            retry = [t for t in trials if t.user_attrs.get("suite.retry_of") == [one.number]]
            assert len(retry) == 1 and retry[0].state != TrialState.FAIL
            assert retry[0].user_attrs["suite.key"] == one.user_attrs["suite.key"]
    for run in cut:
        assert run.info.status == "KILLED" and run.data.tags["suite.status"] == "interrupted"


@pytest.mark.slow
@needs_pg
@pytest.mark.parametrize("kind", ["grid", "tune"])
def test_sigkill_of_a_worker_mid_trial_loses_nothing(tmp_path, cli, pg_database, mlflow_server, kind):
    """Through Optuna's heartbeat: the silent trial is failed after the grace period and retried."""
    kill_one_worker_mid_trial(tmp_path, cli, pg_database(), mlflow_server, kind, HEARTBEAT)


@pytest.mark.slow
def test_sigkill_of_a_worker_on_the_local_default_storage_loses_nothing(tmp_path, cli):
    """A journal file has no heartbeat: a trial whose worker process on this host is gone is lost."""
    kill_one_worker_mid_trial(tmp_path, cli, str(tmp_path / "optuna.journal"), f"sqlite:///{tmp_path}/mlflow.db",
                              "grid")


@pytest.mark.slow
def test_three_workers_share_a_grid_on_the_local_default_storage(tmp_path):
    """No PostgreSQL, no server: the default journal file for Optuna, MLflow's sqlite store.
    Two `suite worker`s and the `suite run --storage` that enqueues the grid share it."""
    storage = ".suite/optuna.journal"
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    specs = grid_specs(4)
    name = "grid-local"
    workers = [start_worker(storage, tmp_path, "--study", name) for _ in range(2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": tracking}
    runner = subprocess.run(
        [str(BIN / "suite"), "run", *GRID_FLAGS, "--experiment", "local", "--storage", storage, "--study", name,
         "--device", "cpu", "--workers", "1"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240,
    )
    assert runner.returncode == 0, runner.stdout + runner.stderr
    assert f"{len(specs)} runs: {len(specs)} done" in runner.stdout
    mine = int(re.search(r"^worker \S+: (\d+) trial", runner.stderr, re.M).group(1))
    done = finish(workers)
    assert sum(done.values()) + mine == len(specs)
    check_grid(str(tmp_path / storage), name, tracking, specs)
    # a larger grid in a new study: the specs already in MLflow are not run again (--verbose: a line per run)
    more = subprocess.run(
        [str(BIN / "suite"), "run", *GRID_FLAGS[2:], "--seeds", "5", "--experiment", "local", "--storage", storage,
         "--device", "cpu", "--workers", "1", "--verbose"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240,
    )
    assert more.returncode == 0, more.stdout + more.stderr
    assert more.stdout.count("10 runs: 10 done") == 1
    assert (more.stdout + more.stderr).count("already in MLflow, not run again") == len(specs)
    client = MlflowClient(tracking_uri=tracking)
    runs = runs_of(client, "local", "tags.`suite.kind` = 'run'")
    assert len(runs) == 10 == len({r.data.tags["suite.spec_hash"] for r in runs})


# -- fast failures ----------------------------------------------------------------------------
def _one_line_error(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("url", ["postgresql//suite@127.0.0.1/db", "nosuchdb://x/y", "postgresql:///nohost",
                                 "optuna.db"])
def test_malformed_storage_url_is_a_one_line_error(cli, url):
    line = _one_line_error(cli("worker", "--storage", url, ok=False))
    assert "malformed" in line


@contextlib.contextmanager
def hanging_up_server() -> Iterator[tuple[int, list[int]]]:
    """A local TCP server that accepts each connection and closes it at once (a host that is up
    but no database or MLflow server): yields its port and the list of connections it took."""
    server = socket.create_server(("127.0.0.1", 0))
    taken: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            taken.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], taken
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not, on Linux)
        server.close()
        thread.join()


@pytest.mark.parametrize("refused", [True, False], ids=["port-closed", "hangs-up"])
def test_unreachable_postgres_is_one_line_after_a_bounded_number_of_attempts(cli, refused):
    """The bound is on the work (connection attempts, each with CONNECT_TIMEOUT), not on a clock."""
    with contextlib.ExitStack() as stack:
        port, taken = (free_port(), []) if refused else stack.enter_context(hanging_up_server())
        url = f"postgresql://suite:suite@127.0.0.1:{port}/suite"
        line = _one_line_error(cli("worker", "--storage", url, ok=False))
    assert "cannot reach the Optuna storage" in line and "suite:***@" in line
    assert len(taken) == 0 if refused else 1 <= len(taken) <= 3  # reached, and at most open_storage's 3 attempts


@pytest.mark.parametrize("refused", [True, False], ids=["port-closed", "hangs-up"])
def test_unreachable_mlflow_server_is_one_line_after_one_attempt(cli, refused):
    with contextlib.ExitStack() as stack:
        port, taken = (free_port(), []) if refused else stack.enter_context(hanging_up_server())
        uri = f"http://127.0.0.1:{port}"
        line = _one_line_error(cli("run", "--steps", "5", "--tracking-uri", uri, "--quiet", ok=False))
    assert "cannot reach the MLflow tracking server" in line
    assert len(taken) == (0 if refused else 1)  # the /health check, once


@needs_pg
def test_wrong_postgres_password_is_a_one_line_error(cli):
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL).set(password="wrong-password").render_as_string(hide_password=False)
    line = _one_line_error(cli("worker", "--storage", url, ok=False))
    assert "password authentication failed" in line


def test_a_key_enqueued_twice_runs_once(tmp_path):
    """Two submitters racing may enqueue one key twice: the later trial is dropped when claimed."""
    storage = open_storage(str(tmp_path / "keys.journal"))
    study = optuna.create_study(storage=storage, study_name="keys")
    study.set_user_attr(KIND, "test-keys")
    for key in ["a", "b", "a", "c", "b"]:
        study.enqueue_trial({}, user_attrs={KEY: key})
    study.set_user_attr(READY, True)
    ran: list[str] = []
    register_kind("test-keys", lambda study, ctx: lambda trial: ran.append(trial.user_attrs[KEY]) or 0.0)
    summary = Worker(str(tmp_path / "keys.journal"), ["keys"], WorkerContext(quiet=True)).run()
    assert sorted(ran) == ["a", "b", "c"]
    assert summary.states == Counter({"complete": 3, "duplicate (dropped)": 2})
    dropped = {t.number: t.user_attrs["suite.duplicate_of"] for t in study.get_trials() if t.state == TrialState.FAIL}
    assert dropped == {2: 0, 4: 1}


def test_a_trial_lost_after_its_run_ended_is_retried_not_dropped(tmp_path):
    """A worker killed after a trial's run ended and was recorded (``suite.status``) but before it
    told Optuna: the heartbeat fails the trial and its retry (same key, same user attributes) runs;
    it is not dropped as a duplicate of the lost trial, so the key still gets its result."""
    from suite.stores import HeartbeatPolicy
    from suite.vocab import TRIAL_STATUS

    url = f"sqlite:///{tmp_path / 'lost.db'}"  # a database storage (heartbeats), one process here
    policy = HeartbeatPolicy(interval=1, grace=1)
    storage = open_storage(url, policy)
    study = optuna.create_study(storage=storage, study_name="lost")
    study.set_user_attr(KIND, "test-lost")
    study.enqueue_trial({}, user_attrs={KEY: "a"})
    study.set_user_attr(READY, True)
    (frozen,) = study.get_trials(deepcopy=False)
    assert storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING)  # claimed by a worker ...
    storage.record_heartbeat(frozen._trial_id)
    storage.set_trial_user_attr(frozen._trial_id, TRIAL_STATUS, "completed")  # ... whose run ended, then it died
    time.sleep(2.5)  # past the grace period
    ran: list[str] = []
    register_kind("test-lost", lambda study, ctx: lambda trial: ran.append(trial.user_attrs[KEY]) or 0.0)
    Worker(url, ["lost"], WorkerContext(quiet=True), heartbeat_policy=policy).run()
    assert ran == ["a"]
    states = [(t.state, t.user_attrs.get("suite.retry_of")) for t in study.get_trials(deepcopy=False)]
    assert states == [(TrialState.FAIL, None), (TrialState.COMPLETE, [0])]


@pytest.mark.slow
@needs_pg
@pytest.mark.parametrize("engine", ["stacked", "loop"])
def test_every_run_reported_finished_on_a_tracking_server_survives_kill_9(tmp_path, mlflow_server, engine):
    """On an http store "completed" is printed once the run's writes are flushed to the server:
    ``kill -9`` right after the Nth such line (seeded) loses none of the runs printed."""
    from tests.test_kill_events import GRID_SPECS, RUN_LINE, grid, kill_at

    n = random.Random(f"http-{engine}").randint(1, GRID_SPECS - 1)
    args = [*grid(0, engine), "--experiment", f"kill-http-{engine}", "--tracking-uri", mlflow_server]
    reported = {line["name"]: line["status"] for line in kill_at(args, tmp_path, {}, RUN_LINE, n)}
    assert len(reported) == n
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(f"kill-http-{engine}")
    runs = client.search_runs([experiment.experiment_id], "tags.`suite.kind` = 'run'", max_results=1000)
    stored = {r.info.run_name: r for r in runs}
    for name, status in reported.items():
        run = stored.get(name)
        assert run is not None, f"{name} was printed as {status} and is not on the server"
        assert run.info.status == "FINISHED" and run.data.tags["suite.status"] == status
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) > 1
        assert "best_val_loss" in run.data.metrics


@needs_pg
def test_json_output_stays_json_on_a_tracking_server(tmp_path, mlflow_server):
    """MLflow prints "View run … at: URL" on stdout for each run it ends on a server; the suite's
    ``--format json`` output must still parse."""
    import json

    out = subprocess.run([str(BIN / "suite"), "run", "--problem", "linreg", "--lr", "0.01,0.02", "--epochs", "1",
                          "--device", "cpu", "--experiment", "json-http", "--tracking-uri", mlflow_server,
                          "--format", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["total"] == result["ran_now"] == len(result["runs"]) == 2
