"""The suite in a notebook: ``suite.run(...)``, ``suite.tune(...)`` and ``suite.results(experiment)``
return pandas DataFrames, one row per run (or per study), built on the library the CLI uses, with
the same validation and the same errors (:class:`suite.errors.SuiteError`, one line each).

    import suite
    df = suite.run(problem="nqm", optimizer="sgd", lr=0.5, momentum=[0, 0.9], batch_size=[4, 64],
                   steps=400, eval_every=20, seeds=3)
    df.groupby(["optimizer.momentum", "batch_size"])["val_loss"].agg(["mean", "std"])

Lists stand for the CLI's comma lists (a grid axis); ``sets`` holds ``family.param=value`` texts
(the CLI's ``--set``). What ``suite run`` prints afterwards is in ``df.attrs`` (experiment,
tracking URI, parent run, the ``mlflow ui`` command and URLs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from suite.errors import SpecError

RUN_FLAGS = ("problem", "sampler", "optimizer", "scheduler", "averager", "batch_size", "epochs", "steps",
             "eval_every", "seed", "seeds", "lr", "momentum", "weight_decay", "diverge_factor", "target")
LIST_FLAGS = ("problem", "sampler", "optimizer", "scheduler", "averager", "batch_size", "lr", "momentum",
              "weight_decay", "seeds")
META_COLUMNS = ("run_id", "name", "status", "mlflow_status", "kind", "config", "section", "spec_hash", "start_time",
                "parent_run_id")


def _flag_text(name: str, value: Any) -> Any:
    """A Python value as the CLI's text: a list becomes a comma list."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, range)):
        if name not in LIST_FLAGS:
            raise SpecError(f"{name}={list(value)!r}: {name} takes one value, not a list")
        return ",".join(str(v) for v in value)
    return value if name in ("epochs", "steps", "eval_every", "seed", "diverge_factor", "target") else str(value)


def run(benchmark: str | None = None, *, sets: Sequence[str] = (), experiment: str | None = None,
        tracking_uri: str | None = None, device: str = "auto", workers: int | None = None, force: bool = False,
        engine: str = "auto", stack_size: int | None = None, quiet: bool = False,
        histories: bool | Sequence[str] = False,
        **flags: Any):
    """Run a configuration, a grid or a benchmark file, like ``suite run``; return its runs as a
    DataFrame (see :func:`results`), runs done earlier included.

    ``flags``: the CLI's flags by their Python names (``problem``, ``optimizer``, ``lr``,
    ``batch_size``, ``steps``, ``seeds``, …); a list is a grid axis."""
    from pathlib import Path

    from suite.api import runs, summaries
    from suite.exec.devices import resolve_devices
    from suite.registry import get_registry

    unknown = sorted(set(flags) - set(RUN_FLAGS))
    if unknown:
        raise SpecError(f"unknown option {unknown[0]!r} of suite.run; options: {', '.join(RUN_FLAGS)}")
    registry = get_registry()
    if benchmark is not None:
        if flags or sets:
            raise SpecError(f"{benchmark}: {', '.join(sorted(flags)) or 'sets'} cannot be combined with a benchmark "
                            "file; edit the file (or copy it) instead")
        path = Path(benchmark)
        plan = (runs.plan_spec_file if runs.is_spec_file(path) else runs.plan_benchmark)(path, registry, experiment)
    else:
        plan = runs.plan_flags(registry, {k: _flag_text(k, v) for k, v in flags.items()}, list(sets), experiment)
    args = ([repr(benchmark)] if benchmark else []) + [f"{k}={v!r}" for k, v in flags.items()]
    plan.command = f"suite.run({', '.join(args + ([f'sets={list(sets)!r}'] if sets else []))})"
    runs.check(plan, registry)
    out, tracker = runs.run_local(plan, registry, resolve_devices(device, workers), tracking_uri=tracking_uri,
                                  force=force, quiet=quiet, engine=engine, stack_size=stack_size)
    ids = [out.run_ids.get(s.hash) or out.skipped[s.hash].info.run_id for s in out.specs
           if s.hash in out.run_ids or s.hash in out.skipped]
    df = _frame(tracker, tracker.client.search_runs([tracker.experiment_id], _ids_filter(ids), max_results=5000)
                if ids else [], histories)
    df.attrs.update({k: v for k, v in summaries.run_summary(plan, out, tracker).items()
                     if k not in ("runs", "configurations")})
    return df


def tune(**options: Any):
    """Tune like ``suite tune`` (the same options by their Python names: ``problem``,
    ``optimizer``, ``batch_sizes``, ``trials``, ``budget``, ``objective``, ``seeds``, ``spaces``,
    ``sets``, …; lists are comma lists); return one row per study with its best value and params."""
    import pandas as pd

    from suite.api import summaries, tuning
    from suite.registry import get_registry

    quiet = bool(options.pop("quiet", True))
    for key in ("problem", "optimizer", "scheduler", "averager", "sampler", "batch_sizes"):
        if isinstance(options.get(key), (list, tuple)):
            options[key] = ",".join(str(v) for v in options[key])
    registry = get_registry()
    try:
        request = tuning.plan_request(registry, **options)
    except TypeError as exc:  # an option suite tune does not have
        raise SpecError(f"suite.tune: {exc}") from None
    outcome = tuning.run(request, registry, (lambda line: None) if quiet else print)
    if outcome is None:  # submit_only
        return pd.DataFrame()
    data = summaries.tune_summary(outcome, outcome.experiment_id)
    rows = []
    for study in data.pop("studies"):
        best = study.pop("best_params") or {}
        reeval = study.pop("reeval", None) or {}
        rows.append({**study, **{f"best.{k}": v for k, v in best.items()},
                     **{f"reeval_{k}": reeval.get(k) for k in ("mean", "std") if reeval}})
    df = pd.DataFrame(rows)
    df.attrs.update(data)
    return df


def results(experiment: str, *, tracking_uri: str | None = None, kind: str | None = "run",
            histories: bool | Sequence[str] = False, filter_string: str = ""):
    """Every run of an MLflow experiment as a DataFrame: one row per run with its name, status,
    configuration (``config``: the same for every seed), params (as numbers where they are
    numbers) and final metrics (``best_val_loss`` beside ``val_loss``).

    ``kind``: the runs' ``suite.kind`` (``run`` for grid runs, ``trial``, ``reeval``, ``grid``,
    ``study``, ``tune``; None for all). ``histories``: True (every metric) or metric names adds a
    ``history`` column holding each run's metrics against steps (a DataFrame indexed by step;
    ``lr`` and ``epoch`` at every step, though stored only where their line bends)."""
    from suite.tracking.tracker import Tracker
    from suite.vocab import TAG_KIND

    tracker = Tracker(experiment, tracking_uri, create=False)
    filters = [f"tags.`{TAG_KIND}` = '{kind}'"] if kind else []
    if filter_string:
        filters.append(filter_string)
    df = _frame(tracker, tracker.search(" AND ".join(filters)), histories)
    df.attrs.update(experiment=experiment, experiment_id=tracker.experiment_id, tracking_uri=tracker.tracking_uri)
    return df


def _ids_filter(ids: Iterable[str]) -> str:
    return "attributes.run_id IN (" + ", ".join(f"'{i}'" for i in ids) + ")"


def _frame(tracker: Any, found: Sequence[Any], histories: bool | Sequence[str]):
    import pandas as pd
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from suite.tracking.records import param_value
    from suite.vocab import TAG_CONFIG, TAG_HASH, TAG_KIND, TAG_SECTION, TAG_STATUS

    rows = []
    for run in sorted(found, key=lambda r: r.info.start_time):
        tags = run.data.tags
        row: dict[str, Any] = {
            "run_id": run.info.run_id, "name": run.info.run_name, "status": tags.get(TAG_STATUS),
            "mlflow_status": run.info.status, "kind": tags.get(TAG_KIND), "config": tags.get(TAG_CONFIG),
            "section": tags.get(TAG_SECTION), "spec_hash": tags.get(TAG_HASH),
            "start_time": pd.Timestamp(run.info.start_time, unit="ms"), "parent_run_id": tags.get(MLFLOW_PARENT_RUN_ID),
        }
        row.update({k: param_value(v) for k, v in run.data.params.items()})
        row.update(run.data.metrics)
        if histories:
            names = list(run.data.metrics) if histories is True else list(histories)
            row["history"] = _history(tracker, run.info.run_id, names)
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else list(META_COLUMNS))


def _history(tracker: Any, run_id: str, names: Sequence[str]):
    """A run's metrics against steps; ``lr`` and ``epoch``, stored only where their line bends
    (:mod:`suite.tracking.thin`), filled in along it at every step another metric has."""
    import pandas as pd

    from suite.tracking.thin import THINNED

    series = {}
    for name in names:
        points = tracker.client.get_metric_history(run_id, name)
        series[name] = pd.Series({p.step: p.value for p in points}, dtype=float)
    frame = pd.DataFrame(series).sort_index()
    frame.index.name = "step"
    for name in THINNED.intersection(frame.columns):  # stored as the ends of their straight stretches
        frame[name] = frame[name].interpolate(method="index", limit_area="inside")
    return frame
