"""Where trials run: in this process, or in one worker process per device entry.

Each worker (``spawn`` context, pinned to its device) opens the shared Optuna storage and
claims the studies' enqueued trials one at a time (:mod:`suite.distributed.worker`), as ``suite worker``
processes on other machines do: the storage is the only coordination. Workers do not talk to
MLflow: they send their runs' events (start, eval, done, tag, interrupted, echo) to the parent
process, which is the tracking store's single writer (safe with MLflow's sqlite default).

With one device entry everything runs in this process, with no start-up cost.
"""

from __future__ import annotations

import os
import pickle
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from suite.exec.dispatch import cpu_threads, die_with_parent, pin_device
from suite.vocab import TAG_DEVICE

POLL_S = 0.5


@dataclass(frozen=True)
class TuneJob:
    """Work on a study until none of its enqueued trials is waiting or running."""

    plan: Any  # suite.tune.plan.StudyPlan


@dataclass(frozen=True)
class SpecJob:
    """Train one RunSpec (re-evaluation of a best configuration) and report it as ``key``."""

    key: str
    study: str
    spec: Any  # suite.specs.spec.RunSpec
    tags: dict


@dataclass(frozen=True)
class Settings:
    """What every worker needs besides its jobs."""

    storage: str | None
    study_seed: int | None
    pruner: str
    heartbeat: Any = None  # suite.stores.HeartbeatPolicy


class PipeSink:
    """A :class:`suite.tune.plan.TrialSink` that forwards every call to the parent process over
    this worker's own pipe; runs are tagged with the worker's device as the user named it
    (``cuda:1``, not the ``cuda:0`` an isolated worker sees)."""

    def __init__(self, wid: int, conn: Any, device: str) -> None:
        self.wid, self.conn, self.device = wid, conn, device

    def start(self, key: str, study: str, spec: Any, kind: str, tags: dict) -> None:
        self.conn.send((self.wid, "start", (key, study, spec, kind, {**tags, TAG_DEVICE: self.device})))

    def __getattr__(self, method: str):
        if method not in ("eval", "done", "tag", "interrupted", "echo"):
            raise AttributeError(method)
        return lambda *args: self.conn.send((self.wid, method, args))


def run_job(job: TuneJob | SpecJob, settings: Settings, storage: Any, registry: Any, device: str, sink: Any,
            worker: int) -> None:
    """Run one job here."""
    from suite.tune.studies import run_study_share

    if isinstance(job, TuneJob):
        run_study_share(job.plan, settings.storage, sink=sink, device=device, worker=worker,
                        heartbeat=settings.heartbeat)
        return
    from suite.engine.loop import train

    sink.start(job.key, job.study, job.spec, "reeval", {**job.tags, TAG_DEVICE: device})
    try:
        result = train(job.spec, device, registry, lambda step, m: sink.eval(job.key, step, m))
    except BaseException:
        sink.interrupted(job.key)
        raise
    sink.done(job.key, result)


def run(jobs: Sequence[Sequence[TuneJob | SpecJob]], devices: Sequence[str], settings: Settings,
        sink: Any) -> list[str]:
    """Run ``jobs[i]`` on ``devices[i]``: in this process when there is one device entry, else
    in one worker process per entry. ``sink`` receives every event (in this process).

    Returns one line per worker that died or raised (its unfinished runs are marked
    interrupted and its running trials failed, so a rerun redoes them); the others go on."""
    from suite.registry import get_registry
    from suite.stores import open_storage

    active = [(d, j) for d, j in zip(devices, jobs, strict=True) if j]
    if not active:
        return []
    if len(devices) == 1:
        storage = open_storage(settings.storage)
        registry = get_registry()
        for job in active[0][1]:
            run_job(job, settings, storage, registry, pin_device(devices[0]), sink, worker=0)
        return []
    pool = _Pool(settings, sink)
    try:
        return pool.run(active)
    finally:
        from suite.tune.studies import fail_orphan_trials

        plans = [job.plan for _, jobs_ in active for job in jobs_ if isinstance(job, TuneJob)]
        fail_orphan_trials(open_storage(settings.storage), plans, {str(p.pid) for p in pool.procs.values()})


class _Pool:
    """One process per device entry, each with its own pipe to the parent (not one shared queue:
    a worker killed while writing would hold a shared queue's lock and hang the others)."""

    def __init__(self, settings: Settings, sink: Any) -> None:
        import multiprocessing

        self.ctx = multiprocessing.get_context("spawn")
        self.settings, self.sink = settings, sink
        self.procs: dict[int, Any] = {}
        self.conns: dict[int, Any] = {}
        self.in_flight: dict[int, set[str]] = {}

    def run(self, active: list[tuple[str, Sequence[Any]]]) -> list[str]:
        from multiprocessing.connection import wait

        threads = cpu_threads([d for d, _ in active])
        errors: list[str] = []
        try:
            for wid, (device, jobs) in enumerate(active):
                reader, writer = self.ctx.Pipe(duplex=False)
                p = self.ctx.Process(target=worker_main, name=f"suite-tune-{wid}-{device}", daemon=True,
                                     args=(wid, device, threads, list(jobs), self.settings, writer, os.getpid()))
                p.start()
                writer.close()  # the worker holds the only write end: its death reads as EOF here
                self.procs[wid], self.conns[wid] = p, reader
                self.in_flight[wid] = set()
            running = set(self.procs)
            while running:
                by_conn = {self.conns[w]: w for w in running}
                for conn in wait(list(by_conn), timeout=POLL_S):
                    wid = by_conn[conn]
                    try:
                        _, method, args = conn.recv()
                    except (EOFError, OSError, pickle.UnpicklingError):
                        running.discard(wid)
                        self.procs[wid].join(timeout=5)
                        self._lost(wid, f"worker {wid} died (exit code {self.procs[wid].exitcode})", errors)
                        continue
                    if method == "exit":
                        running.discard(wid)
                        if args:
                            self._lost(wid, f"worker {wid} failed: {args[0].strip().splitlines()[-1]}", errors)
                        continue
                    self._track(wid, method, args)
                    getattr(self.sink, method)(*args)
        except BaseException:
            self._stop()
            for wid in self.procs:
                self._lost(wid, "interrupted", [])
            raise
        finally:
            self._stop()
        return errors

    def _track(self, wid: int, method: str, args: tuple) -> None:
        if method == "start":
            self.in_flight[wid].add(args[0])
        elif method in ("done", "interrupted"):
            self.in_flight[wid].discard(args[0])

    def _lost(self, wid: int, why: str, errors: list[str]) -> None:
        """Mark the runs a dead worker left unfinished as interrupted."""
        for key in sorted(self.in_flight.get(wid, ())):
            self.sink.interrupted(key)
        self.in_flight[wid] = set()
        if why != "interrupted":
            errors.append(why)

    def _stop(self) -> None:
        for p in self.procs.values():
            if p.is_alive():
                p.terminate()
        for p in self.procs.values():
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        for conn in self.conns.values():
            conn.close()


def worker_main(wid: int, device: str, threads: int, jobs: list, settings: Settings, conn: Any,
                parent_pid: int) -> None:
    """A worker process: pin to ``device`` and run ``jobs``, sending events to the parent."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    local = pin_device(device, isolate=True)
    error = None
    try:
        import torch

        if device == "cpu":
            torch.set_num_threads(threads)
        from suite.registry import get_registry
        from suite.stores import open_storage

        storage = open_storage(settings.storage)
        registry = get_registry()
        sink = PipeSink(wid, conn, device)
        for job in jobs:
            if os.getppid() != parent_pid:
                return
            run_job(job, settings, storage, registry, local, sink, worker=wid)
    except Exception:
        error = traceback.format_exc()
    conn.send((wid, "exit", (error,) if error else ()))


def terminate_on_sigterm() -> Callable[[], None]:
    """Turn SIGTERM into KeyboardInterrupt, so a terminated ``suite tune`` marks its unfinished
    runs and trials as interrupted; returns a function that restores the previous handler."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)
