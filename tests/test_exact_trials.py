"""`--trials N` stays exact when several invocations of one study start at once (on a journal file,
an SQLite database and PostgreSQL), when a study is resumed with more trials, and when an
invocation is killed while it enqueues.

The races are run by real processes against the real storage: each racer (``RACER`` below)
enqueues a study's slots as :func:`suite.tuning.slots.share` does, and all racers of a round are
released by one event (a line written to each one's stdin), ten rounds per storage. Whole `suite
tune` invocations race ten rounds of 2-4 on a journal file and on PostgreSQL: forked from one
process that imported the suite once, released together by one event (a pipe closed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from suite.stores import open_storage
from suite.vocab import TRIAL_KEY
from tests.conftest import runs_of
from tests.test_scale import PG_URL, pg_database  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow

RACERS = 3
ROUNDS = 10
TRIALS = 6

# One racer process: for each JSON line on stdin, enqueue the slots of a study as `suite tune` does
# (suite.tuning.slots.share: the slots no trial holds, under the storage's lock; the racer leaves out
# share's imports of torch, seconds per process), then say what it added. With "hold_after": k, it
# stops after its k-th enqueued trial, says "holding" and waits on stdin (it is killed there).
RACER = r"""
import json, sys
import optuna
from suite.distributed.enqueue import enqueue_lock, enqueue_missing
from suite.stores import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = open_storage(sys.argv[1])
for line in sys.stdin:
    cmd = json.loads(line)
    study = optuna.create_study(storage=storage, study_name=cmd["study"], load_if_exists=True)
    if cmd.get("hold_after"):
        enqueue, count = optuna.Study.enqueue_trial, [0]
        def held(self, *args, **kwargs):
            enqueue(self, *args, **kwargs)
            count[0] += 1
            if count[0] == cmd["hold_after"]:
                print("holding", flush=True)
                sys.stdin.readline()
        optuna.Study.enqueue_trial = held
    with enqueue_lock(sys.argv[1], cmd["study"]):
        added = enqueue_missing(study, [(f"slot-{k}", {"suite.slot": k}) for k in range(cmd["trials"])])
    print(f"added {added}", flush=True)
"""


@pytest.fixture(params=["journal", "sqlite", "postgresql"])
def storage_url(request, tmp_path):
    """A fresh Optuna storage of each kind (or of the kind a test names)."""
    if request.param == "journal":
        return str(tmp_path / "optuna.journal")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/optuna.db"
        open_storage(url)  # its tables, so that the racers do not all create them
        return url
    if not PG_URL:
        pytest.skip("no PostgreSQL: set SUITE_TEST_PG_URL (CI does)")
    return request.getfixturevalue("pg_database")()


def racer(url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RACER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def ask(procs: list[subprocess.Popen], cmd: dict) -> list[str]:
    """Release every racer with one command each (written back to back), then read each answer."""
    for p in procs:
        p.stdin.write(json.dumps(cmd) + "\n")
        p.stdin.flush()
    return [p.stdout.readline().strip() for p in procs]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.stdin.close()
            p.wait(timeout=60)


def keys(storage, name: str) -> Counter:
    """How many trials of study ``name`` hold each key (every state)."""
    study = optuna.load_study(study_name=name, storage=storage)
    return Counter(t.user_attrs.get(TRIAL_KEY) for t in study.get_trials(deepcopy=False))


def slot_keys(n: int) -> Counter:
    return Counter(f"slot-{k}" for k in range(n))


def test_racing_invocations_enqueue_each_slot_once_and_a_raise_adds_exactly_the_new_ones(storage_url):
    procs = [racer(storage_url) for _ in range(RACERS)]
    storage = open_storage(storage_url)
    try:
        for i in range(ROUNDS):
            answers = ask(procs, {"study": f"s{i}", "trials": TRIALS})
            assert keys(storage, f"s{i}") == slot_keys(TRIALS), answers
            assert sorted(answers) == ["added 0"] * (RACERS - 1) + [f"added {TRIALS}"]
        answers = ask(procs, {"study": "s0", "trials": TRIALS + 2})  # a resumed study, --trials raised
        assert keys(storage, "s0") == slot_keys(TRIALS + 2)
        assert sorted(answers) == ["added 0"] * (RACERS - 1) + ["added 2"]
    finally:
        stop(procs)


def test_an_invocation_killed_mid_enqueue_leaves_a_study_the_next_one_fills(storage_url):
    """The first racer dies holding the lock after 2 of its slots; the second, asked meanwhile,
    gets the lock from the storage (or the kernel) and enqueues exactly the other slots."""
    first, second = racer(storage_url), racer(storage_url)
    try:
        assert ask([first], {"study": "k", "trials": TRIALS, "hold_after": 2}) == ["holding"]
        second.stdin.write(json.dumps({"study": "k", "trials": TRIALS}) + "\n")
        second.stdin.flush()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        assert second.stdout.readline().strip() == f"added {TRIALS - 2}"
        assert keys(open_storage(storage_url), "k") == slot_keys(TRIALS)
    finally:
        first.kill()
        stop([second])


TUNE = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", "32", "--trials", "2", "--budget",
        "steps:1", "--pruner", "none", "--device", "cpu", "--workers", "1", "--quiet"]
TUNE_TRIALS = 2

# One runner process per storage kind: it imports the suite once (and what tune imports lazily),
# then for each round forks one child per racer (ROUND_RACERS[i] of them), each running the real
# click command `suite tune ...` in-process (what the `suite` executable runs) with its own MLflow
# store, on the round's own storage (a fresh journal file or PostgreSQL database: one study, the
# same for all racers of the round). The children first block on one pipe; the runner releases
# them all at once by closing its end (one event), then waits for each and prints one JSON line of
# their exit codes. A child still running after HANG_GUARD_S is ended by its alarm.
RUNNER = r"""
import json, os, signal, sys, traceback
from suite.cli import main

urls, root, argv, racers = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
# what tune imports (lazily), imported here once; nothing is run here, so no thread pool is forked
import matplotlib.pyplot, optuna.importance, optuna.visualization.matplotlib, sklearn.ensemble  # noqa
import suite.api.tuning, suite.engine.loop, suite.stores, suite.tracking.tracker, suite.tuning.winners  # noqa
from suite.registry import get_registry
get_registry()
for i, n in enumerate(racers):
    gate_r, gate_w = os.pipe()
    pids = []
    for k in range(n):
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.close(gate_w)
                out = open(os.path.join(root, f"r{i}-{k}.out"), "w")
                err = open(os.path.join(root, f"r{i}-{k}.err"), "w")
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout, sys.stderr = out, err
                signal.alarm(int(os.environ["HANG_GUARD_S"]))
                os.read(gate_r, 1)  # returns b"" when the runner closes its end: all start together
                args = [*argv, "--storage", urls[i], "--experiment", f"r{i}",
                        "--tracking-uri", f"sqlite:///{root}/mlflow-{i}-{k}.db"]
                try:
                    main.main(args, prog_name="suite", standalone_mode=True)
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 71
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    os.close(gate_r)
    os.close(gate_w)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print(json.dumps(codes), flush=True)
"""
ROUND_RACERS = [2, 3, 4, 2, 3, 4, 2, 3, 4, 3]
HANG_GUARD_S = 300  # a hang guard for one racer, never reached by a passing round


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_simultaneous_suite_tune_invocations_finish_exactly_the_trials_asked(kind, request, tmp_path):
    """Ten rounds of 2-4 whole `suite tune` invocations of one study, all released at once: every
    invocation succeeds, the study holds each slot once, every trial completed, and MLflow one
    trial run per slot (across the racers' stores)."""
    from mlflow import MlflowClient

    if kind == "journal":
        urls = [str(tmp_path / f"r{i}.journal") for i in range(len(ROUND_RACERS))]
    elif not PG_URL:
        pytest.skip("no PostgreSQL: set SUITE_TEST_PG_URL (CI does)")
    else:
        make = request.getfixturevalue("pg_database")
        urls = [make() for _ in ROUND_RACERS]
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(urls), str(tmp_path), json.dumps(TUNE), json.dumps(ROUND_RACERS)],
        capture_output=True, text=True,
        env={**os.environ, "HANG_GUARD_S": str(HANG_GUARD_S), "OMP_NUM_THREADS": "1"},  # no OpenMP pool to fork
        cwd=tmp_path, timeout=len(ROUND_RACERS) * HANG_GUARD_S,  # a hang guard: each round ends by its alarms
    )
    assert out.returncode == 0, out.stderr
    rounds = [json.loads(line) for line in out.stdout.splitlines()[-len(ROUND_RACERS):]]
    assert len(rounds) == len(ROUND_RACERS)
    for i, codes in enumerate(rounds):
        errs = {k: (tmp_path / f"r{i}-{k}.err").read_text() for k in range(ROUND_RACERS[i])}
        assert codes == [0] * ROUND_RACERS[i], (i, errs)
        storage = open_storage(urls[i])
        (name,) = [s.study_name for s in storage.get_all_studies()]
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        assert Counter(t.user_attrs.get(TRIAL_KEY) for t in trials) == slot_keys(TUNE_TRIALS), (i, errs)
        assert all(t.state == TrialState.COMPLETE for t in trials), (i, errs)
        runs = [r for k in range(ROUND_RACERS[i])
                for r in runs_of(MlflowClient(f"sqlite:///{tmp_path}/mlflow-{i}-{k}.db"), f"r{i}",
                                 "tags.`suite.kind` = 'trial'")]
        assert len(runs) == TUNE_TRIALS, i


def test_a_grid_submission_cut_mid_enqueue_leaves_a_study_the_next_submission_fills(workdir, tracking_uri,
                                                                                     monkeypatch):
    """A shared grid's first submission stops after 2 of its 4 specs (here an interrupt; a kill
    loses the lock the same way, see above): the next one joins the study it set up, enqueues the
    other 2 and marks it ready."""
    from suite.api import runs
    from suite.distributed.grid_study import submit_grid
    from suite.registry import get_registry
    from suite.vocab import STUDY_READY

    specs = runs.plan_flags(get_registry(), dict(problem="linreg", lr="0.01,0.02", seeds="2", epochs=1)).specs
    url = str(workdir / "grid.journal")
    enqueue = optuna.Study.enqueue_trial

    def cut(self, *args, **kwargs):
        if len(self.get_trials(deepcopy=False)) == 2:
            raise KeyboardInterrupt
        enqueue(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", cut)
    with pytest.raises(KeyboardInterrupt):
        submit_grid(specs, url, experiment="cut", study_name="cut")
    monkeypatch.setattr(optuna.Study, "enqueue_trial", enqueue)
    assert len(keys(open_storage(url), "cut")) == 2
    assert submit_grid(specs, url, experiment="cut", study_name="cut") == ("cut", False)
    assert keys(open_storage(url), "cut") == Counter(s.hash for s in specs)
    assert optuna.load_study(study_name="cut", storage=open_storage(url)).user_attrs[STUDY_READY]
