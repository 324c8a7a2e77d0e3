"""Workers that pull trials from Optuna studies: the one mechanism by which grids and tuning
spread over any number of processes on any number of machines.

Nothing here is a queue or lock of our own. A study's work is its WAITING trials (enqueued by
whoever created the study); a worker claims one by moving it to RUNNING through the storage
(``set_trial_state_values``: the database row lock, or the journal file's lock, lets exactly
one claimant win, as in Optuna's own ``Study.ask``), runs it, and ``tell``\\s the result.
While a trial runs, a thread records Optuna heartbeats (database storages); a worker that
finds a trial whose heartbeat is older than the grace period fails it through
``optuna.storages.fail_stale_trials``, whose callback re-enqueues it (same params, same user
attributes) for the next worker. A journal file has no heartbeat; there a RUNNING trial
whose worker process on this host is gone is failed and re-enqueued the same way. A worker that
cannot finish a trial (SIGTERM, Ctrl-C, the tracking store failing) gives it back likewise.
A worker does not claim trials it was not given: unlike ``Study.ask`` it never creates a new
trial, so the study's total is what was enqueued; of two trials enqueued for the same
``suite.key`` (two submitters racing), the later is dropped when claimed.

How a trial of a study is run depends on the study's kind (user attribute ``suite.kind``). The
caller says how, with ``runners`` (kind -> factory of trial runners): ``suite worker`` passes the
built-in kinds (:data:`suite.api.work.KINDS`: ``grid``, ``tune``); :func:`register_kind` adds a
kind for every worker of the process (an extension, a test). This module imports neither kind.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from suite import journal
from suite.errors import StoreError, TrialFailed
from suite.exec.phases import CLOCK
from suite.exec.signals import interrupted
from suite.stores import (
    MAX_RETRY,
    HeartbeatPolicy,
    describe,
    is_database,
    normalize_storage,
    open_storage,
    worker_label,
)
from suite.vocab import (
    STUDY_KIND,
    STUDY_READY,
    TRIAL_DUPLICATE_OF,
    TRIAL_KEY,
    TRIAL_RETRY_OF,
    TRIAL_STATUS,
    TRIAL_VALUE,
    TRIAL_WORKER,
)

READY_TIMEOUT = 60.0  # how long a worker waits for a named study to appear and be ready
SHARED_STACKS_ENV = "SUITE_SHARED_STACKS"  # 0: a worker works on one study at a time (no shared rounds)


def sharing_on() -> bool:
    """Whether studies that can share a stack do (``SUITE_SHARED_STACKS``, on unless ``0``):
    :meth:`Worker._run_shared` rounds, and ``suite tune``'s groups of studies."""
    return os.environ.get(SHARED_STACKS_ENV, "1").strip() != "0"


@dataclass
class WorkerContext:
    """What a worker process brings to each trial: its device, its label and options."""

    device: str = "cpu"
    tracking_uri: str | None = None  # overrides the tracking URI recorded in the study
    quiet: bool = False
    label: str = field(default_factory=worker_label)
    salt: str = ""  # seeds samplers apart (default: the label); fixed for reproducible runs
    echo: Callable[[str], None] = print
    engine: str = "auto"  # auto | stacked | loop: how a batch of claimed trials trains
    stack_size: int | None = None  # at most this many trials claimed and trained at once

    def say(self, text: str) -> None:
        if not self.quiet:
            self.echo(text)

    def started(self, study: str, trials: Sequence[int]) -> None:
        """Say that these trials of ``study`` have started: their MLflow runs are in the store,
        RUNNING (what a script or test watching the workers can act on, e.g. to stop one mid-run)."""
        self.say(f"[{self.label}] {study}: started trial(s) {', '.join(map(str, trials))}")


TrialRunner = Callable[[optuna.Trial], float]
RunnerFactory = Callable[[optuna.Study, WorkerContext], TrialRunner]
_KINDS: dict[str, RunnerFactory] = {}


def register_kind(kind: str, factory: RunnerFactory) -> None:
    """Declare how trials of studies with ``suite.kind == kind`` are run. ``factory(study,
    ctx)`` returns ``run(trial) -> value``; ``run`` raises :class:`TrialFailed` for a failed run."""
    _KINDS[kind] = factory




def run_failed(trial: Any) -> bool:
    """Whether a FAIL trial failed through its own run (``suite.status`` says ``failed``), not
    because its worker was lost or stopped, even after its run ended and was recorded."""
    return trial.state == TrialState.FAIL and trial.user_attrs.get(TRIAL_STATUS) == "failed"


def holds_key(trial: Any) -> bool:
    """Whether a trial stands for its ``suite.key``: it is waiting, running or done, or its run
    failed. A trial that failed because its worker was lost does not (its retry does), even if
    its run had ended: its retry takes the recorded run over (a grid) or runs it again."""
    if trial.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return run_failed(trial)


def duplicate_of(storage: Any, study_id: int, trial_id: int) -> int | None:
    """The number of an earlier trial holding the same ``suite.key`` as this one, if any.

    Two submitters enqueueing the same key at once make two trials; the later one is then
    dropped when claimed, whoever claims first, so every key runs once."""
    mine = storage.get_trial(trial_id)
    key = mine.user_attrs.get(TRIAL_KEY)
    if key is None:
        return None
    for other in storage.get_all_trials(study_id, deepcopy=False):
        if other.number < mine.number and other.user_attrs.get(TRIAL_KEY) == key and holds_key(other):
            return other.number
    return None


@dataclass
class Summary:
    """What one worker did: trials run per study, and how they ended."""

    label: str
    trials: Counter = field(default_factory=Counter)
    states: Counter = field(default_factory=Counter)

    def line(self) -> str:
        per = ", ".join(f"{n} in {s}" for s, n in sorted(self.trials.items())) or "none"
        ends = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items()))
        return f"worker {self.label}: {sum(self.trials.values())} trial(s) ({per})" + (f"; {ends}" if ends else "")


def claim(study: optuna.Study, storage: Any, study_id: int, label: str | None = None) -> optuna.Trial | None:
    """Move one WAITING trial of ``study`` to RUNNING and return it, or None if none is left.
    The storage lets exactly one of several concurrent claimants succeed for each trial.
    ``label`` (the claimant's, :mod:`suite.owners`): see :func:`_take`."""
    for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        if _take(storage, trial_id, label):
            return optuna.Trial(study, trial_id)
    return None


def claim_more(study: optuna.Study, storage: Any, study_id: int, same: Callable[[Any], bool],
               limit: int, label: str | None = None) -> list[optuna.Trial]:
    """Claim more WAITING trials for which ``same(frozen_trial)`` holds (trials that can train
    together with one already claimed), as :func:`claim` does one: up to ``limit``, and at most
    half of those waiting, so that other workers, here or elsewhere, find work too (guided
    self-scheduling: batches shrink as the study empties)."""
    out: list[optuna.Trial] = []
    candidates = [f for f in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
                  if same(f)]
    limit = min(limit, (len(candidates) + 1) // 2)
    for frozen in candidates:
        if len(out) >= limit:
            break
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        if _take(storage, trial_id, label):
            out.append(optuna.Trial(study, trial_id))
    return out


def _take(storage: Any, trial_id: int, label: str | None = None) -> bool:
    """Move WAITING trial ``trial_id`` to RUNNING; False if another claimant got it first.

    On a storage with Optuna's heartbeat, the trial's first heartbeat is recorded before the
    claim: Optuna counts a RUNNING trial as stale only once it has a heartbeat, so a process
    killed between its claim and its first beat would otherwise leave a trial that no one ever
    fails and retries, and that every later worker waits on. (A beat on a trial that stays
    WAITING, its claimant killed first or beaten to it, is ignored until the trial runs, and the
    next claimant beats afresh.)

    A storage without a heartbeat (a journal file) finds a lost trial by its worker's label
    instead, so the claimant's ``label`` is set before the claim for the same reason: a trial
    RUNNING with no label would never be found lost. Two claimants may label one WAITING trial;
    the winner labels it again once it holds it (:meth:`Worker._prepare`), and until then a
    trial whose winner was killed is found lost once the other labeller has ended (or is the
    process that looks)."""
    if getattr(storage, "get_heartbeat_interval", lambda: None)() is not None:
        storage.record_heartbeat(trial_id)
    elif label is not None:
        storage.set_trial_user_attr(trial_id, TRIAL_WORKER, label)
    try:
        return storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    except UpdateFinishedTrialError:
        return False


@contextlib.contextmanager
def heartbeat(storage: Any, trial_id: int | Sequence[int], policy: HeartbeatPolicy | None) -> Iterator[None]:
    """Record Optuna heartbeats for ``trial_id`` (one or several) every ``policy.interval``
    seconds meanwhile, from one thread."""
    if policy is None or not hasattr(storage, "record_heartbeat"):
        yield
        return
    stop = threading.Event()

    ids = [trial_id] if isinstance(trial_id, int) else list(trial_id)

    def beat() -> None:
        while True:
            for one in ids:
                with contextlib.suppress(Exception):  # a missed beat is retried at the next interval
                    storage.record_heartbeat(one)
            if stop.wait(policy.interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{ids[0]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def suite_studies(storage: Any) -> dict[str, dict[str, Any]]:
    """Every study in ``storage`` made by the suite: name -> user attributes. (The studies
    alone: Optuna's study summaries also copy every trial of every study, 2.1 of a default
    ``suite tune``'s 27 s when a worker asked before each population.)"""
    return {s.study_name: s.user_attrs for s in storage.get_all_studies() if STUDY_KIND in s.user_attrs}


class Worker:
    """Pulls trials from the suite's studies in one storage until none is left.

    ``studies``: names to work on (default: every suite study in the storage, as found at
    each round, so studies created later are picked up). With ``wait``, keeps polling for new
    work instead of exiting. A worker does not exit while trials of its studies are RUNNING
    elsewhere: if their worker died (heartbeat gone stale; with a journal file, its process on
    this host gone), this worker fails and retries them, so nothing is left running forever.
    With ``shared``, each round claims from every study at once and trains the batches together
    (:meth:`_run_shared`: studies whose populations share one stack).
    """

    def __init__(
        self,
        storage_url: str | None,
        studies: Iterable[str] = (),
        ctx: WorkerContext | None = None,
        *,
        heartbeat_policy: HeartbeatPolicy | None = None,
        wait: bool = False,
        poll: float = 1.0,
        max_trials: int | None = None,
        runners: dict[str, RunnerFactory] | None = None,
        shared: bool = False,
    ) -> None:
        self.url = normalize_storage(storage_url)
        self.database = is_database(self.url)
        self.policy = (heartbeat_policy or HeartbeatPolicy()) if self.database else None
        self.storage = open_storage(self.url, self.policy)
        self.names = list(studies)
        self.ctx = ctx or WorkerContext()
        self.wait, self.poll, self.max_trials = wait, poll, max_trials
        self.summary = Summary(self.ctx.label)
        self.runners = runners or {}
        self.shared = shared  # claim from all studies at once and train their batches together
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no link per run
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._studies: dict[str, tuple[optuna.Study, int, TrialRunner]] = {}

    # -- studies --------------------------------------------------------------------------
    def _ready_studies(self, started: float) -> list[str]:
        found = suite_studies(self.storage)
        names = self.names or sorted(found)
        ready = [n for n in names if found.get(n, {}).get(STUDY_READY)]
        missing = [n for n in self.names if n not in ready]
        if missing and not self.wait and time.monotonic() - started > READY_TIMEOUT:
            known = ", ".join(sorted(found)) or "none"
            raise StoreError(
                f"no ready study {', '.join(map(repr, missing))} in {describe(self.url)} after "
                f"{READY_TIMEOUT:.0f} s (suite studies there: {known}); check --study and --storage"
            )
        return ready

    def _open(self, name: str) -> tuple[optuna.Study, int, TrialRunner]:
        if name not in self._studies:
            study = optuna.load_study(study_name=name, storage=self.storage)
            kind = study.user_attrs.get(STUDY_KIND)
            factory = self.runners.get(kind) or _KINDS.get(kind)
            if factory is None:
                raise StoreError(f"study {name!r} is of kind {kind!r}, which this suite cannot run; upgrade sgd-suite")
            study_id = self.storage.get_study_id_from_name(name)
            self._studies[name] = (study, study_id, factory(study, self.ctx))
        return self._studies[name]

    def _pending(self, name: str) -> bool:
        """Whether the study still has trials waiting or running (somewhere else)."""
        study, study_id, _ = self._open(name)
        states = (TrialState.WAITING, TrialState.RUNNING)
        return bool(self.storage.get_all_trials(study_id, deepcopy=False, states=states))

    def _fail_lost_trials(self, study: optuna.Study, study_id: int) -> None:
        """Fail the trials whose worker is gone, and enqueue each again (Optuna's retry callback).

        A database storage knows through Optuna's heartbeat. A journal file (one host) has no
        heartbeat: there a RUNNING trial whose worker (its label, :mod:`suite.owners`) is this
        host's and no longer alive, or whose pid another process now holds, is lost."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.database:
                optuna.storages.fail_stale_trials(study)
                return
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        from suite import owners

        for frozen in self.storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            label = frozen.user_attrs.get(TRIAL_WORKER, "")
            if not owners.gone(label):
                continue
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            if TRIAL_STATUS in frozen.user_attrs:  # its run ended and was recorded; only the last write was lost
                with contextlib.suppress(UpdateFinishedTrialError):
                    self.storage.set_trial_state_values(trial_id, **_recorded_outcome(frozen))
                continue
            try:
                if self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    retry(study, self.storage.get_trial(trial_id))
                    self.ctx.say(f"[{self.ctx.label}] trial {frozen.number} of {study.study_name}: its worker "
                                 f"{label} is gone; failed and enqueued again")
            except UpdateFinishedTrialError:
                continue  # another worker got there first

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> Summary:
        """Work until nothing is left (or forever with ``wait``); return what was done."""
        started = time.monotonic()
        while self.max_trials is None or sum(self.summary.trials.values()) < self.max_trials:
            interrupted()  # a safe point for a stop signal: between two trials
            names = self._ready_studies(started)
            if (self._run_shared(names) if self.shared else self._run_one(names)):
                continue
            waiting_for_named = len(names) < len(self.names)
            if not self.wait and not waiting_for_named and not any(self._pending(n) for n in names):
                break
            time.sleep(self.poll)
        for name in list(self._studies):
            self._finished(name)
        return self.summary

    def _run_one(self, names: list[str]) -> bool:
        for name in names:
            study, study_id, runner = self._open(name)
            with CLOCK.phase("optuna"):  # the storage's reads and the claim's write
                self._fail_lost_trials(study, study_id)
                trial = claim(study, self.storage, study_id, self.ctx.label)
            if trial is None:
                continue
            if hasattr(runner, "batch"):
                self._execute_batch(name, study, study_id, trial, runner)
            else:
                self._execute(name, study, trial, runner)
            return True
        return False

    def _prepare(self, name: str, study: optuna.Study, trial: optuna.Trial) -> bool:
        """Label a claimed trial; drop it (and say False) if it duplicates an earlier one."""
        trial.set_user_attr(TRIAL_WORKER, self.ctx.label)
        lineage = self.storage.get_trial(trial._trial_id).system_attrs.get("retry_history")
        if lineage:  # set by Optuna's retry callback on the copy of a lost trial
            trial.set_user_attr(TRIAL_RETRY_OF, list(lineage))
        earlier = duplicate_of(self.storage, self._studies[name][1], trial._trial_id)
        if earlier is not None:
            trial.set_user_attr(TRIAL_DUPLICATE_OF, earlier)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            self.summary.states["duplicate (dropped)"] += 1
            return False
        self.summary.trials[name] += 1
        return True

    def _execute_batch(self, name: str, study: optuna.Study, study_id: int, first: optuna.Trial,
                       runner: Any) -> None:
        """Claim the waiting trials that can train together with ``first`` (the runner's
        ``group_key``; at most ``max_batch`` in all) and run them as one batch: a grid's stack
        of specs, a tuning population."""
        trials = self._claim_batch(name, study, study_id, first, runner)
        if not trials:
            return
        with heartbeat(self.storage, [t._trial_id for t in trials], self.policy):
            try:
                outcomes = runner.batch(trials)
            except BaseException:  # interrupted, or the tracking store failed: not the runs' fault
                for t in trials:
                    self._give_back(study, t)
                raise
        self._tell_batch(name, study, trials, outcomes)

    def _claim_batch(self, name: str, study: optuna.Study, study_id: int, first: optuna.Trial,
                     runner: Any) -> list[optuna.Trial]:
        """``first`` and the waiting trials claimed to train with it (see :meth:`_execute_batch`),
        labelled, duplicates dropped."""
        with CLOCK.phase("optuna"), journal.burst(self.storage):  # the claims' writes under one lock
            key = runner.group_key(self.storage.get_trial(first._trial_id))
            limit = runner.max_batch() - 1 if key is not None else 0
            more = (claim_more(study, self.storage, study_id, lambda f: runner.group_key(f) == key, limit,
                               self.ctx.label)
                    if limit else [])
            return [t for t in [first, *more] if self._prepare(name, study, t)]

    def _tell_batch(self, name: str, study: optuna.Study, trials: list[optuna.Trial], outcomes: Any) -> None:
        """Tell ``study`` how each of a batch's trials ended: ``(state, value, message)`` each
        (on a journal file: under one lock, with one fsync, :func:`suite.journal.burst`)."""
        with CLOCK.phase("optuna"), journal.burst(self.storage):  # its fsync and release counted too
            for trial, (state, value, message) in zip(trials, outcomes, strict=True):
                if message and state == TrialState.FAIL:
                    self.ctx.say(f"[{self.ctx.label}] {name} trial {trial.number} failed: {message}")
                if state == TrialState.COMPLETE:
                    study.tell(trial, value, skip_if_finished=True)
                else:
                    study.tell(trial, state=state, skip_if_finished=True)
                self.summary.states[state.name.lower()] += 1

    def _run_shared(self, names: list[str]) -> bool:
        """One round over several studies at once: claim a batch from every study with waiting
        trials whose runner's ``share_key()`` is the first claimed study's (each as
        :meth:`_execute_batch` would, so that other workers find work in every study too) and
        train them together through the runners' ``batch_group`` (a tuning population of each
        study in one stack). Each trial is told to its own study. A study whose key is None
        trains alone; studies whose runner has no ``batch_group`` are worked on one at a time
        (:meth:`_run_one`)."""
        together = [n for n in names if hasattr(self._open(n)[2], "batch_group")]
        if not together:
            return self._run_one(names)
        claimed = []  # (name, study, trials, runner)
        key: Any = None  # the first claimed study's share_key: only studies with the same one join it
        for name in together:
            study, study_id, runner = self._open(name)
            if claimed and (key is None or _share_key(runner) != key):
                continue
            with CLOCK.phase("optuna"), journal.burst(self.storage):  # the claims under one lock of a journal file
                self._fail_lost_trials(study, study_id)
                first = claim(study, self.storage, study_id, self.ctx.label)
                trials = self._claim_batch(name, study, study_id, first, runner) if first is not None else []
            if trials:
                claimed.append((name, study, trials, runner))
                key = key if len(claimed) > 1 else _share_key(runner)
        if not claimed:  # nothing waiting in the studies trained together: the others, one at a time
            rest = [n for n in names if n not in together]
            return bool(rest) and self._run_one(rest)
        ids = [t._trial_id for _, _, trials, _ in claimed for t in trials]
        with heartbeat(self.storage, ids, self.policy):
            try:
                outcomes = claimed[0][3].batch_group([(runner, trials) for _, _, trials, runner in claimed])
            except BaseException:  # interrupted, or the tracking store failed: not the runs' fault
                for _, study, trials, _ in claimed:
                    for t in trials:
                        self._give_back(study, t)
                raise
        for (name, study, trials, _), part in zip(claimed, outcomes, strict=True):
            self._tell_batch(name, study, trials, part)
        return True

    def _execute(self, name: str, study: optuna.Study, trial: optuna.Trial, runner: TrialRunner) -> None:
        if not self._prepare(name, study, trial):
            return
        state = TrialState.FAIL
        value: float | None = None
        with heartbeat(self.storage, trial._trial_id, self.policy):
            try:
                value = runner(trial)
                state = TrialState.COMPLETE
            except TrialFailed as exc:
                self.ctx.say(f"[{self.ctx.label}] {name} trial {trial.number} failed: {exc}")
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except BaseException:  # interrupted, or the tracking store failed: not the run's fault
                self._give_back(study, trial)
                raise
        if state == TrialState.COMPLETE:
            study.tell(trial, value, skip_if_finished=True)
        else:
            study.tell(trial, state=state, skip_if_finished=True)
        self.summary.states[state.name.lower()] += 1

    def _give_back(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Fail a trial this worker cannot finish and enqueue it again, as if its worker were lost."""
        with contextlib.suppress(Exception):
            frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            if frozen.state == TrialState.FAIL and not run_failed(frozen):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, frozen)

    def _finished(self, name: str) -> None:
        """Let the study's runner close what belongs to the whole study once nothing is pending."""
        _, _, runner = self._studies[name]
        close = getattr(runner, "close", None)
        if close is not None and not self._pending(name):
            close()


def _share_key(runner: Any) -> Any:
    """The key under which a runner's study trains with others in one round (None: alone)."""
    share_key = getattr(runner, "share_key", None)
    return share_key() if share_key is not None else None


def _recorded_outcome(frozen: Any) -> dict[str, Any]:
    """The final state of a trial whose run ended (``suite.status`` set) but whose worker died
    before telling Optuna (e.g. a journal line cut by a kill): what the worker would have told."""
    status, value = frozen.user_attrs.get(TRIAL_STATUS), frozen.user_attrs.get(TRIAL_VALUE)
    if status == "completed" and isinstance(value, (int, float)):
        return {"state": TrialState.COMPLETE, "values": [float(value)]}
    if status in ("diverged", "stopped"):
        return {"state": TrialState.PRUNED}
    return {"state": TrialState.FAIL}


def run_worker(storage_url: str | None, studies: Iterable[str], ctx: WorkerContext, **kwargs: Any) -> Summary:
    """Run one :class:`Worker` to the end (the body of each ``suite worker`` process)."""
    return Worker(storage_url, studies, ctx, **kwargs).run()
