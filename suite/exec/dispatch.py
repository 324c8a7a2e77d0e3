"""Dispatch: run specs on worker processes, one per device entry, and report back.

Each entry of the device list (see :func:`suite.exec.devices.resolve_devices`) gets one worker
process, started with the ``spawn`` context and pinned to its device (a CUDA worker sees only
its GPU through ``CUDA_VISIBLE_DEVICES``). Workers are handed specs one at a time over their
own pipe, run them through the engine (:func:`suite.engine.loop.run_specs`) and send ``start`` /
``eval`` / ``done`` events back over it. The parent process receives every event and does all
the logging, so the tracking store has a single writer (robust with MLflow's sqlite default)
and the engine stays free of MLflow.

With a single worker the specs run in the parent process itself (no process start-up cost).
Workers die with the parent: they are daemons, they ask Linux to kill them when the parent
dies (``PR_SET_PDEATHSIG``), and they stop when their pipe closes or their parent changes. A
worker that dies mid-run (segfault, out of memory) has its run reported as failed and is
replaced, so the rest of the grid goes on; workers that die before running anything three
times end the grid (:class:`WorkerStartError`) instead of being restarted forever.

This module imports neither torch nor MLflow at the top, so a spawned worker starts by
importing only what it needs.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from suite.errors import SuiteError

OnStart = Callable[[int, str], None]
OnEval = Callable[[int, int, dict], None]
OnDone = Callable[[int, Any], None]
POLL_S = 0.5
MAX_FAILED_STARTS = 3


class WorkerStartError(SuiteError):
    """Worker processes keep dying before they run anything (a plugin that fails in them, a
    device that cannot be initialised)."""


@dataclass
class Callbacks:
    """What the parent does with a worker's events (all called in the parent process)."""

    on_start: OnStart
    on_eval: OnEval
    on_done: OnDone
    in_flight: dict[int, str] = field(default_factory=dict)  # index -> device, for interruption


def run(specs: Sequence[Any], devices: Sequence[str], callbacks: Callbacks) -> None:
    """Run ``specs`` (indexed by position) on ``devices``; call the callbacks as events arrive.

    Uses ``min(len(devices), len(specs))`` workers; with one, runs in this process.
    A ``KeyboardInterrupt`` (Ctrl-C or SIGTERM, see :func:`handle_stop_signals`) stops the
    workers and propagates; ``callbacks.in_flight`` then names the runs that were cut short.
    """
    n = min(len(devices), len(specs))
    if n == 0:
        return
    if n == 1:
        _run_inline(specs, devices[0], callbacks)
    else:
        _Pool(list(devices[:n]), callbacks).run(specs)


def _run_inline(specs: Sequence[Any], device: str, cb: Callbacks) -> None:
    from suite.engine.loop import run_specs

    local = pin_device(device)
    def on_eval(index: int, step: int, metrics: dict) -> None:
        interrupted()
        cb.on_eval(index, step, metrics)

    for index, spec in enumerate(specs):
        interrupted()
        cb.in_flight[index] = device
        cb.on_start(index, device)
        results = run_specs([spec], local, on_eval=lambda _s, step, m, _i=index: on_eval(_i, step, m))
        for result in results:
            result.device = device
            cb.in_flight.pop(index, None)
            cb.on_done(index, result)


def pin_device(device: str, *, isolate: bool = False) -> str:
    """The torch device name a worker uses for ``device``; with ``isolate`` the worker is made
    to see only its GPU (set before CUDA initialises in a fresh process)."""
    if not device.startswith("cuda"):
        return device
    index = device.partition(":")[2] or "0"
    if isolate:
        os.environ["CUDA_VISIBLE_DEVICES"] = index
        return "cuda:0"
    return f"cuda:{index}"


def cpu_threads(devices: Sequence[str]) -> int:
    """Torch threads per CPU worker, so that the CPU workers together use every core once."""
    n_cpu = sum(1 for d in devices if d == "cpu")
    return max(1, (os.cpu_count() or 1) // max(1, n_cpu))


class _Pool:
    """Worker processes, each with its own duplex pipe: the parent hands a worker its next spec
    when the worker says it is ready, so it always knows which spec a worker holds. A worker
    that dies mid-message can only break its own pipe (a shared queue's lock would hang all)."""

    def __init__(self, devices: list[str], cb: Callbacks) -> None:
        import multiprocessing

        self.ctx = multiprocessing.get_context("spawn")
        self.devices, self.cb = devices, cb
        self.workers: dict[int, tuple[Any, str, Any]] = {}  # id -> (process, device, pipe end)
        self.busy: dict[int, int] = {}  # worker id -> spec index
        self.ready: set[int] = set()  # workers that finished starting up
        self.failed_starts = 0
        self.next_id = 0
        self.threads = cpu_threads(devices)

    def _start(self, device: str) -> None:
        wid = self.next_id
        self.next_id += 1
        conn, child = self.ctx.Pipe(duplex=True)
        p = self.ctx.Process(
            target=worker_main, args=(wid, device, self.threads, child, os.getpid()),
            name=f"suite-worker-{wid}-{device}", daemon=True,
        )
        p.start()
        child.close()  # the worker's end lives in the worker only: its death reads as EOF here
        self.workers[wid] = (p, device, conn)

    def run(self, specs: Sequence[Any]) -> None:
        from multiprocessing.connection import wait

        self.specs_json = [spec.to_json() for spec in specs]
        self.pending = list(range(len(specs)))[::-1]  # pop() takes the first
        self.remaining = set(range(len(specs)))
        for device in self.devices:
            self._start(device)
        try:
            while self.remaining:
                interrupted()
                by_conn = {conn: wid for wid, (_, _, conn) in self.workers.items()}
                for conn in wait(list(by_conn), timeout=POLL_S):
                    wid = by_conn[conn]
                    try:
                        event = conn.recv()
                    except (EOFError, OSError, pickle.UnpicklingError):
                        self._lost(wid)
                        continue
                    self._handle(wid, event)
                for wid, (p, _, _) in list(self.workers.items()):  # a worker gone without EOF (rare)
                    if not p.is_alive() and wid in self.workers:
                        self._lost(wid)
            for p, _, _ in self.workers.values():  # each got None when nothing was left
                p.join(timeout=10)
        finally:
            self._stop()

    def _assign(self, wid: int) -> None:
        conn = self.workers[wid][2]
        index = self.pending.pop() if self.pending else None
        try:
            conn.send(None if index is None else (index, self.specs_json[index]))
        except OSError:
            if index is not None:
                self.pending.append(index)  # the worker is gone: its EOF comes next
            return
        if index is not None:
            self.busy[wid] = index

    def _handle(self, wid: int, event: tuple) -> None:
        kind = event[0]
        if kind == "ready":
            self.ready.add(wid)
            self._assign(wid)
        elif kind == "start":
            self.cb.in_flight[event[1]] = event[2]
            self.cb.on_start(event[1], event[2])
        elif kind == "eval":
            self.cb.on_eval(event[1], event[2], event[3])
        elif kind == "done":
            index = event[1]
            self.busy.pop(wid, None)
            self.cb.in_flight.pop(index, None)
            self.remaining.discard(index)
            self.cb.on_done(index, event[2])
            self._assign(wid)

    def _lost(self, wid: int) -> None:
        """A worker's pipe closed: it exited (normally, after None) or died."""
        from suite.engine.loop import RunResult
        from suite.specs.spec import RunSpec

        p, device, conn = self.workers.pop(wid)
        conn.close()
        p.join(timeout=5)
        index = self.busy.pop(wid, None)
        if wid not in self.ready:
            self.failed_starts += 1
            if self.failed_starts >= MAX_FAILED_STARTS:
                raise WorkerStartError(
                    f"worker processes on {device} died {self.failed_starts} times before running anything "
                    f"(last exit code {p.exitcode}); see the error above, or try --device cpu"
                )
        if index is not None and index in self.remaining:
            self.cb.in_flight.pop(index, None)
            self.remaining.discard(index)
            reason = f"worker process on {device} died (exit code {p.exitcode})"
            spec = RunSpec.from_json(self.specs_json[index])
            self.cb.on_done(index, RunResult(spec=spec, status="failed", reason=reason, error=reason, device=device))
        if self.pending:
            self._start(device)

    def _stop(self) -> None:
        for p, _, _ in self.workers.values():
            if p.is_alive():
                p.terminate()
        for p, _, conn in self.workers.values():
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
            conn.close()


def worker_main(wid: int, device: str, threads: int, conn: Any, parent_pid: int) -> None:
    """A worker process: pin to ``device``, say it is ready, then run the specs it is handed
    until it gets ``None`` (or its parent goes away)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    local = pin_device(device, isolate=True)
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)
    from suite.engine.loop import run_specs
    from suite.registry import get_registry
    from suite.specs.spec import RunSpec

    registry = get_registry()

    def on_eval(index: int, step: int, metrics: dict) -> None:
        if os.getppid() != parent_pid:
            os._exit(1)  # orphaned: the parent is gone
        conn.send(("eval", index, step, metrics))

    try:
        conn.send(("ready",))
        while (item := conn.recv()) is not None:
            index, spec_json = item
            spec = RunSpec.from_json(spec_json)
            conn.send(("start", index, device))
            for result in run_specs([spec], local, registry, on_eval=lambda _s, st, m, _i=index: on_eval(_i, st, m)):
                result.device = device
                conn.send(("done", index, result))
    except (EOFError, BrokenPipeError):
        return  # the parent is gone


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Signals:
    """The first SIGINT/SIGTERM only sets a flag; the loops raise ``KeyboardInterrupt`` at the
    next safe point (between two events, never inside a tracking call), so every run that was
    started can be marked interrupted. A second signal interrupts at once."""

    received: int | None = None


def interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a stop signal arrived (called at safe points)."""
    if _Signals.received is not None:
        raise KeyboardInterrupt(f"signal {_Signals.received}")


def handle_stop_signals() -> Callable[[], None]:
    """Install the SIGINT/SIGTERM handlers; returns a function that restores the old ones."""

    def handler(signum: int, frame: Any) -> None:
        if _Signals.received is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        _Signals.received = signum

    _Signals.received = None
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        return lambda: None

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _Signals.received = None

    return restore
