"""Run a list of specs with tracking: resume, a parent run, progress, and the summary.

This is the glue between dispatch (processes and devices), tracking (MLflow) and report
(tables, figures). The parent process is MLflow's only writer: workers send their events here.

Resume: a spec whose hash has a run with ``suite.status`` completed or diverged is skipped
(``force`` re-runs it). Runs left RUNNING by a dead invocation on this host are first marked
interrupted (KILLED), so they are never counted as done and are run again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from suite.engine.exactness import mark_unstable
from suite.engine.target import steps_to_target
from suite.engine.units import plan_units
from suite.errors import SuiteError
from suite.exec.phases import CLOCK
from suite.exec.pool import Pool
from suite.grids.locks import Claims
from suite.grids.tasks import UnitTask, train_unit
from suite.progress import Progress
from suite.registry import Registry
from suite.report import tables
from suite.report.score import Score
from suite.specs import naming
from suite.specs.axes import varying_keys
from suite.specs.naming import file_name
from suite.specs.spec import RunSpec
from suite.tracking import diagnose, ui
from suite.tracking.tracker import Tracker
from suite.vocab import (
    FAILED,
    INTERRUPTED,
    MLFLOW_NOTE,
    TAG_DISPATCH,
    TAG_N_FAILED,
    TAG_N_SKIPPED,
    TAG_N_SPECS,
    TAG_REASON,
    TAG_SECTION,
    TAG_STATUS,
)

Sections = Sequence[tuple[str, Sequence[RunSpec]]]
NOTE_LIMIT = 7800  # MLflow keeps at most 8000 characters of a tag


@dataclass
class GridOutcome:
    """What one invocation did and found."""

    specs: list[RunSpec]
    results: dict[str, Any] = field(default_factory=dict)  # hash -> RunResult of this invocation
    skipped: dict[str, Any] = field(default_factory=dict)  # hash -> MLflow run done earlier
    elsewhere: set[str] = field(default_factory=set)  # hashes of skipped runs another invocation did meanwhile
    reaped: list[str] = field(default_factory=list)
    rows: list[tables.GridRun] = field(default_factory=list)
    stats: list[tables.ConfigStats] = field(default_factory=list)
    parent_run_id: str | None = None
    run_ids: dict[str, str] = field(default_factory=dict)  # hash -> MLflow run id of this invocation's runs
    view: str | None = None  # the key of the runs table's shared view in the MLflow UI (suite.tracking.ui)
    dispatch: list[str] = field(default_factory=list)  # how each pass of the pool ran its units, and why

    @property
    def failures(self) -> list[Any]:
        return [r for r in self.results.values() if r.status not in ("completed", "diverged", "stopped")]


def distinct(sections: Sections) -> list[RunSpec]:
    seen: dict[str, RunSpec] = {}
    for _, specs in sections:
        for s in specs:
            seen.setdefault(s.hash, s)
    return list(seen.values())


def run_grid(sections: Sections, tracker: Tracker, *args: Any, **kwargs: Any) -> GridOutcome:
    """Run every distinct spec of ``sections`` not done yet; return what happened (see
    :func:`_run_grid` for the arguments). The tracking store failing on the way (read-only,
    disk full, moved away, corrupt) ends the grid with one line that names the cause
    (:func:`suite.tracking.diagnose.grid_fault`): before any run started, a :class:`StoreError`
    (exit code 2); later a :class:`StoreFailed` (exit code 1) that says how many of the runs
    started are recorded; the same command again runs the rest."""
    out = GridOutcome(specs=distinct(sections))
    try:
        return _run_grid(sections, tracker, *args, out=out, **kwargs)
    except (KeyboardInterrupt, SuiteError):
        raise
    except Exception as exc:
        if not diagnose.store_failure(exc):
            raise
        raise diagnose.grid_fault(exc, tracker.tracking_uri, list(out.run_ids.values())) from None


def _run_grid(
    sections: Sections,
    tracker: Tracker,
    registry: Registry,
    devices: Sequence[str],
    *,
    name: str,
    force: bool = False,
    quiet: bool = False,
    parent: bool = True,
    parent_tags: dict[str, Any] | None = None,
    parent_params: dict[str, Any] | None = None,
    engine: str = "auto",
    stack_size: int | None = None,
    adaptive: bool = False,
    by: Score | None = None,
    curves: bool = True,
    out: GridOutcome,
) -> GridOutcome:
    """Run every distinct spec of ``sections`` not done yet; return what happened.

    ``adaptive``: the pool runs units in this process while that is measured to be cheaper than
    starting worker processes (``suite run`` without ``--workers``; see :class:`suite.exec.pool.Pool`).
    ``by``: what the summary compares configurations by (default: the final val loss).
    ``curves``: the summary draws each section's loss curves on the parent run (``curves/``);
    off where a findings report follows, whose own per-batch-size curves land on the same run.

    ``KeyboardInterrupt`` (Ctrl-C or SIGTERM, see :mod:`suite.exec.signals`)
    marks the runs in flight and the parent run as interrupted, then propagates.
    """
    specs = out.specs
    claims = Claims(tracker.tracking_uri, tracker.experiment_name)  # its clock starts before MLflow is read
    out.reaped = tracker.reap_orphans()
    done = {} if force else tracker.done_runs()
    out.skipped = {s.hash: done[s.hash] for s in specs if s.hash in done}
    todo = [s for s in specs if s.hash not in done]
    section_of, varying = {}, {}
    for sec, sspecs in sections:
        varying[sec] = varying_keys(sspecs)
        for s in sspecs:
            section_of.setdefault(s.hash, sec)
    if parent:
        out.parent_run_id = tracker.start_parent(
            name, {TAG_N_SPECS: len(specs), TAG_N_SKIPPED: len(out.skipped), **(parent_tags or {})},
            {**grid_axes(sections), **(parent_params or {})},
        )
    shown = list(dict.fromkeys(k for keys in varying.values() for k in keys))
    out.view = ui.share_view(tracker.set_experiment_tag, shown)
    progress = Progress(len(todo), skipped=len(out.skipped), quiet=quiet)
    progress.begin()  # a run is counted once it is in the store (see _GridHandler._settle)
    handler = None
    try:
        # a unit's runs are written together when it ends (one transaction); a writer process may
        # still be writing the last of them while the summary below is drawn
        with tracker.batched(settle=False):
            try:
                deferred = todo
                while deferred:
                    handler = _GridHandler(deferred, tracker, registry, out, section_of, progress, claims, force)
                    handler.varying = varying
                    with CLOCK.phase("building"):
                        units = plan_units(deferred, registry, engine=engine, stack_size=stack_size,
                                           device=devices[0] if devices else "cpu", workers=len(devices))
                    with CLOCK.phase("training"):
                        pool = Pool(devices, train_unit, adaptive=adaptive)
                        pool.run(_ClaimedUnits(handler, units, engine), handler)
                    if pool.decision:
                        out.dispatch.append(f"{len(units)} unit(s): {pool.decision}")
                    deferred = handler.await_others()
            except BaseException as exc:  # Ctrl-C, SIGTERM, or the store/workers failing: leave nothing RUNNING
                status = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else FAILED
                reason = ("interrupted by a signal (Ctrl-C or SIGTERM)" if status == INTERRUPTED
                          else f"the grid stopped: {type(exc).__name__}: {exc}")
                for run_id in (handler.in_flight.values() if handler else ()):
                    _quietly(tracker.mark, run_id, status, reason)
                if out.parent_run_id:
                    _quietly(tracker.mark, out.parent_run_id, status, reason)
                raise
    except BaseException:
        progress.end()
        claims.release_all()  # batched() has written what could be
        raise

    try:
        with CLOCK.phase("reporting"):
            out.rows = collect_rows(sections, out, tracker)
            out.stats = tables.config_stats(out.rows, by)
            if out.parent_run_id:
                log_summary(tracker, out, curves=curves)
    finally:
        try:
            tracker.settle()  # every run is in the store before its claim goes (and is counted)
        finally:
            progress.end()
            claims.release_all()
    return out


class _ClaimedUnits(Sequence):
    """The pool's payloads, built as the pool hands each unit out: the unit's specs are claimed
    then (see :mod:`suite.grids.locks`), and the task holds only those this invocation got."""

    def __init__(self, handler: _GridHandler, units: list[list[int]], engine: str) -> None:
        self.handler, self.units, self.engine = handler, units, engine
        self.tasks: dict[int, UnitTask] = {}
        handler.units = [[] for _ in units]

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, tid: int) -> UnitTask:  # type: ignore[override]
        if tid not in self.tasks:
            mine = [i for i in self.units[tid] if self.handler.claim(i)]
            self.handler.units[tid] = mine
            self.tasks[tid] = UnitTask([self.handler.todo[i].to_json() for i in mine], mine, self.engine)
        return self.tasks[tid]

    def __iter__(self):
        return (self[tid] for tid in range(len(self)))


class _GridHandler:
    """The parent's side of a grid: each worker event becomes an MLflow write (single writer)."""

    def __init__(self, todo: Sequence[RunSpec], tracker: Tracker, registry: Registry, out: GridOutcome,
                 section_of: dict[str, str], progress: Progress, claims: Claims, force: bool = False) -> None:
        self.todo, self.tracker, self.registry, self.out = todo, tracker, registry, out
        self.section_of, self.progress, self.claims, self.force = section_of, progress, claims, force
        self.units: list[list[int]] = []
        self.varying: dict[str, list[str]] = {}  # section -> the keys that vary in it (they name its runs)
        self.run_ids: dict[int, str] = {}  # spec index -> MLflow run id
        self.in_flight: dict[int, str] = {}  # spec index -> run id, started and not finished
        self.others: list[int] = []  # spec indices another invocation holds
        self.finished: list[tuple[str, str, str]] = []  # (hash, name, status) of runs finished since the last write

    def claim(self, index: int) -> bool:
        """Claim spec ``index`` for this invocation: False if another invocation holds it (it is
        looked at again in :meth:`await_others`) or has finished it meanwhile."""
        spec = self.todo[index]
        if not self.claims.try_claim(spec.hash):
            self.others.append(index)
            return False
        if self.claims.touched_since_start(spec.hash) and self._done_elsewhere(spec):
            return False
        self.claims.mark_claimed(spec.hash)
        return True

    def _done_elsewhere(self, spec: RunSpec) -> bool:
        """Whether another invocation finished ``spec`` (then it is reported, not run, and released)."""
        run = self.tracker.done_run(spec.hash)
        if run is None or (self.force and run.info.start_time * 1_000_000 < self.claims.since):
            return False
        self.claims.release(spec.hash)
        self.out.skipped[spec.hash] = run
        self.out.elsewhere.add(spec.hash)
        self.progress.update(self.run_name(spec), run.data.tags.get(TAG_STATUS, "completed"))
        return True

    def await_others(self) -> list[RunSpec]:
        """Wait for the specs other invocations held; return those not done there (to be claimed
        and run here next; no claim is held while waiting, so invocations never wait on each other)."""
        if self.others:  # this invocation's runs are written first, and so their claims released
            self.tracker.settle()
        todo = []
        for index in self.others:
            spec = self.todo[index]
            self.claims.wait(spec.hash)
            if not self._done_elsewhere(spec):
                self.claims.release(spec.hash)
                todo.append(spec)
        if todo:
            self.out.reaped += self.tracker.reap_orphans()  # the other invocation may have died
        return todo

    def _start(self, index: int, device: str) -> None:
        spec = self.todo[index]
        section = self.section_of[spec.hash]
        run_id = self.tracker.start_run(spec, self.registry, device=device, parent_run_id=self.out.parent_run_id,
                                        tags={TAG_SECTION: section}, varying=self.varying.get(section, ()))
        self.run_ids[index] = self.in_flight[index] = self.out.run_ids[spec.hash] = run_id

    def _done(self, index: int, result: Any) -> None:
        if index not in self.run_ids:  # its worker died before it could say it started
            self._start(index, result.device)
        self.in_flight.pop(index, None)
        # a single run gets its own figure; a grid's figures go on its parent run
        fig = tables.run_figure(result) if self.out.parent_run_id is None and result.history else None
        mark_unstable(self.tracker, self.run_ids[index], result)
        self.tracker.finish(self.run_ids[index], result, figure=fig)
        if fig is not None:
            tables.close(fig)
        self.out.results[result.spec.hash] = result
        self.finished.append((result.spec.hash, self.run_name(result.spec), result.status))

    def run_name(self, spec: RunSpec) -> str:
        """The run's name as MLflow shows it (the keys that vary in its section name it)."""
        return naming.run_name(spec, self.varying.get(self.section_of[spec.hash], ()))

    def _settle(self) -> None:
        """Write the finished runs (see :meth:`Tracker.batched`). Once they are in the store,
        count them as done (progress) and release their claims: their results are then in
        MLflow, where other invocations look them up."""
        self.tracker.commit()
        finished, self.finished = self.finished, []
        self.tracker.after_write(lambda: self._written(finished))

    def _written(self, finished: Sequence[tuple[str, str, str]]) -> None:
        for spec_hash, name, status in finished:
            self.claims.release(spec_hash)
            self.progress.update(name, status)

    def on_event(self, tid: int, device: str, kind: str, args: tuple) -> None:
        if kind == "start":  # a unit's runs appear in MLflow, RUNNING, together (one transaction)
            for index in args[0]:
                self._start(index, device)
            self.tracker.commit()
            names = [self.run_name(self.todo[index]) for index in args[0]]
            self.tracker.after_write(lambda: self.progress.started(names))
            return
        if kind == "evals":  # a unit's evaluation step, all its rows at once
            self.tracker.log_metrics_rows([(self.run_ids[index], step, metrics) for index, step, metrics in args[0]])
        elif kind == "done":
            self._done(*args)

    def on_wait(self) -> None:  # a writer process's runs are counted done (and shown) once written
        self.tracker.poll_writes()

    def on_done(self, tid: int, result: Any) -> None:
        self._settle()  # every spec of the unit has reported itself done

    def on_lost(self, tid: int, device: str, why: str) -> None:
        from suite.engine.loop import RunResult

        for index in self.units[tid]:
            spec = self.todo[index]
            if spec.hash not in self.out.results:
                self._done(index, RunResult(spec=spec, status=FAILED, reason=why, error=why, device=device))
        self._settle()


def grid_axes(sections: Sections) -> dict[str, str]:
    """The parent run's params for the grid's axes: ``axis.<key>`` = the values it takes
    (``axis.<section>.<key>`` in a benchmark file of several sections)."""
    out = {}
    for sec, specs in sections:
        flats = [s.flat_params() for s in specs]
        prefix = "axis." if len(sections) == 1 else f"axis.{sec}."
        for key in varying_keys(specs, skip=()):
            values = dict.fromkeys(_text(f[key]) for f in flats if key in f)
            out[prefix + key] = ",".join(values)
    return out


def _text(value: Any) -> str:
    return "None" if value is None else str(value)


def _quietly(fn: Any, *args: Any) -> None:
    """Best effort while already failing: the original error is the one to tables."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        pass


def collect_rows(sections: Sections, out: GridOutcome, tracker: Tracker) -> list[tables.GridRun]:
    rows = []
    for sec, specs in sections:
        for spec in specs:
            result = out.results.get(spec.hash)
            if result is not None:
                final = result.final
                curve = [(s, m["val_loss"]) for s, m in result.history if "val_loss" in m]
                reached = steps_to_target(result.history, spec.target) if spec.target is not None else {}
                rows.append(tables.GridRun(sec, spec, result.status, val_loss=_num(final.get("val_loss")),
                                       avg_val_loss=_num(final.get("avg_val_loss")), reason=result.reason,
                                       run_id=out.run_ids.get(spec.hash, ""), curve=curve,
                                       steps_to_target=reached.get("steps_to_target"), final=dict(final)))
                continue
            run = out.skipped.get(spec.hash)
            if run is None:
                continue
            m = run.data.metrics
            hist = tracker.metric_history(run.info.run_id, "val_loss")
            rows.append(tables.GridRun(sec, spec, run.data.tags.get(TAG_STATUS, "unknown"),
                                   val_loss=_num(m.get("val_loss")), avg_val_loss=_num(m.get("avg_val_loss")),
                                   reason=run.data.tags.get(TAG_REASON, ""),
                                   run_id=run.info.run_id, curve=[(h.step, h.value) for h in hist],
                                   steps_to_target=_num(m.get("steps_to_target")), final=dict(m)))
    return rows


def _num(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def log_summary(tracker: Tracker, out: GridOutcome, *, curves: bool = True) -> None:
    """Log the grid's summary on its parent run: tables, winners, figures (``curves``: each
    section's loss curves too), then its final status."""
    with tracker.writes():  # one transaction on a direct store
        _log_summary(tracker, out, curves)


def _log_summary(tracker: Tracker, out: GridOutcome, curves: bool) -> None:
    pid = out.parent_run_id
    tracker.log_text(pid, tables.table_csv(out.stats), "summary.csv")
    md = tables.table_markdown(out.stats)
    lines = tables.winner_lines(out.stats)
    if lines:
        md += f"\n## {tables.WINNER_HEADER[0].upper()}{tables.WINNER_HEADER[1:]}\n\n"
        md += "".join(f"- {line}\n" for line in lines)
    tracker.log_text(pid, md, "summary.md")
    note = md if len(md) <= NOTE_LIMIT else md[:NOTE_LIMIT] + "\n\n(cut here: the whole table is summary.md)\n"
    tracker.set_tags(pid, {MLFLOW_NOTE: note})  # the parent run's description in the UI
    tracker.log_text(pid, json.dumps([
        {"section": r.section, "spec_hash": r.spec.hash, "name": r.spec.name, "status": r.status, "reason": r.reason}
        for r in out.rows
    ], indent=1), "runs.json")
    for section in dict.fromkeys(c.section for c in out.stats):
        safe = file_name(section)
        if curves:
            fig = tables.curves_figure(out.stats, section)
            tracker.log_figure(pid, fig, f"curves/{safe}.png")
            tables.close(fig)
        fig = tables.batch_size_figure(out.stats, section)
        if fig is not None:
            tracker.log_figure(pid, fig, f"batch_size/{safe}.png")
            tables.close(fig)
    failed = len(out.failures)
    tracker.set_tags(pid, {TAG_N_FAILED: str(failed), **({TAG_DISPATCH: "; ".join(out.dispatch)[:5000]}
                                                         if out.dispatch else {})})
    tracker.mark(pid, "failed" if failed else "completed", f"{failed} run(s) failed" if failed else "")
