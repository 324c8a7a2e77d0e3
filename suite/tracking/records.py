"""What the tracker writes, as plain Python: metrics, params and tags, a run's queued writes, and
the table rows MLflow's SQL store keeps for them.

Nothing here imports MLflow (importing it costs 1.5–3 s, more than a small grid's training), so
the writers that share these rows (:mod:`suite.tracking.bulk` through SQLAlchemy,
:mod:`suite.tracking.direct` through the standard library's ``sqlite3``) and the grid path load
it only where MLflow itself is called. The values below are MLflow's own
(``tests/test_tracking_direct.py`` checks them against the installed MLflow).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple

MAX_PARAM_VAL_LENGTH = 6000  # mlflow.utils.validation
MAX_TAG_VAL_LENGTH = 8000
MAX_EXPERIMENT_TAG_VAL_LENGTH = 20000
MAX_FLOAT = 1.7976931348623157e308
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"  # mlflow.entities.RunStatus
ACTIVE, DELETED = "active", "deleted"  # mlflow.entities.LifecycleStage
SOURCE_UNKNOWN = "UNKNOWN"  # mlflow.entities.SourceType.UNKNOWN
RUN_NAME_TAG = "mlflow.runName"  # mlflow.utils.mlflow_tags
PARENT_RUN_TAG = "mlflow.parentRunId"
USER_TAG = "mlflow.user"
ARTIFACTS_FOLDER = "artifacts"


class Metric(NamedTuple):
    """One metric value (as ``mlflow.entities.Metric``)."""

    key: str
    value: float
    timestamp: int
    step: int


MetricRow = tuple  # a metric value as a plain tuple, (key, value, timestamp, step) as in Metric:
# the tracker keeps them so (a named tuple is made through a Python call, and pickled through one)


class Deferred(NamedTuple):
    """An artifact's text, made when it is written (by the writer process, off the training's
    path: :mod:`suite.tracking.writer`). ``render`` is a module-level function (it is pickled by
    name) and ``render(data)`` the text."""

    render: Callable[[Any], str]
    data: Any

    def text(self) -> str:
        return self.render(self.data)


class RunParam(NamedTuple):
    key: str
    value: str


class RunTag(NamedTuple):
    key: str
    value: str


def to_mlflow(metrics: Iterable[Any] = (), params: Iterable[Any] = (), tags: Iterable[Any] = ()) -> dict[str, list]:
    """The same records as MLflow's entity classes (``MlflowClient.log_batch`` keyword arguments)."""
    from mlflow.entities import Metric as MlMetric
    from mlflow.entities import Param as MlParam
    from mlflow.entities import RunTag as MlRunTag

    return {"metrics": [MlMetric(key, value, timestamp, step) for key, value, timestamp, step in metrics],
            "params": [MlParam(p.key, p.value) for p in params],
            "tags": [MlRunTag(t.key, t.value) for t in tags]}


@dataclass
class PendingRun:
    """What is queued for one run until the next write.

    ``create``: the run is not in the store yet (its start time, tags and params are here).
    ``tags``: tags set after creation (they replace those of the same key). ``status`` and
    ``end_time``: the run is terminated. ``artifacts``: file name -> text, bytes, or text to be
    made (:class:`Deferred`)."""

    run_id: str
    create: bool = False
    start_time: int = 0
    create_tags: dict[str, str] = field(default_factory=dict)
    params: list[RunParam] = field(default_factory=list)
    metrics: list[MetricRow] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None
    end_time: int | None = None
    artifacts: dict[str, str | bytes | Deferred] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.create or self.metrics or self.tags or self.status or self.artifacts)


def param_text(value: Any) -> str:
    """A param's value as MLflow stores it (text): ``str(value)``, so ``None`` is ``"None"``
    and a bool ``"True"``/``"False"``. :func:`param_value` reads it back."""
    return "None" if value is None else str(value)


def param_value(text: str) -> Any:
    """A stored param (text, :func:`param_text`) back as the value it was logged from: ``"None"``
    -> None, ``"True"``/``"False"`` -> bool, an int or float as written by ``str`` -> that
    number; anything else (``"none"``, a component's name, ``"1_0"``) stays the text. The one
    reading of stored params: the notebook API (:func:`suite.api.notebook.runs`) and the report
    (:mod:`suite.report.reader`) both use it."""
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    if text.isascii() and "_" not in text:  # int() and float() also take 1_0 and other scripts' digits
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
    return text


def sanitize(value: float) -> tuple[bool, float]:
    """MLflow's ``SqlAlchemyStore.sanitize_metric_value``: NaN -> (True, 0); ±inf -> ±max float."""
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, MAX_FLOAT if value > 0 else -MAX_FLOAT
    return False, float(value)


def dict_text(value: Any) -> str:
    """A dictionary as ``MlflowClient.log_dict`` writes a ``.json`` artifact."""
    return json.dumps(value, indent=2, default=str)


def artifact_uri(experiment_location: str, run_id: str) -> str:
    """Where MLflow puts a new run's artifacts (``SqlAlchemyStore.create_run``) under an
    experiment whose artifact location is a local path or a URI without a query."""
    return f"{experiment_location.rstrip('/')}/{run_id}/{ARTIFACTS_FOLDER}"


METRIC_COLUMNS = ("run_uuid", "key", "value", "timestamp", "step", "is_nan")  # of RunRows.metrics' tuples
TAG_COLUMNS = ("run_uuid", "key", "value")  # of RunRows.retag's tuples
RUN, KEY, VALUE, TIMESTAMP, STEP = range(5)


@dataclass
class RunRows:
    """The table rows of a set of :class:`PendingRun` records, as MLflow's store writes them."""

    runs: list[dict] = field(default_factory=list)  # new runs
    tags: list[dict] = field(default_factory=list)  # of new runs
    params: list[dict] = field(default_factory=list)
    retag: list[tuple[str, str, str]] = field(default_factory=list)  # (run, key, value) of existing runs
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (name, run): mlflow.runName set again
    ended: list[dict] = field(default_factory=list)  # status (and end time) of existing runs
    metrics: list[tuple] = field(default_factory=list)  # in the order of METRIC_COLUMNS
    latest: dict[tuple[str, str], tuple] = field(default_factory=dict)  # (run, key) -> its latest metric row
    new_ids: set[str] = field(default_factory=set)


def run_rows(runs: Sequence[PendingRun], experiment_id: str, artifact_uri_of: Callable[[str], str]) -> RunRows:
    """Every row ``runs`` add or change: the run rows (``RUNNING`` until terminated), tags
    (``mlflow.runName`` included), params, the metric history with MLflow's sanitising and
    de-duplication, and the latest value per metric by MLflow's rule (largest ``(step,
    timestamp, value)``)."""
    out = RunRows()
    new = [r for r in runs if r.create]
    out.new_ids = {r.run_id for r in new}
    tags_of = {r.run_id: {**r.create_tags, **r.tags} for r in new}
    out.runs = [{
        "run_uuid": r.run_id, "name": tags_of[r.run_id].get(RUN_NAME_TAG, ""),
        "artifact_uri": artifact_uri_of(r.run_id),
        "experiment_id": int(experiment_id), "source_type": SOURCE_UNKNOWN,
        "source_name": "", "entry_point_name": "", "user_id": r.create_tags.get(USER_TAG, "unknown"),
        "status": r.status or RUNNING, "start_time": r.start_time,
        "end_time": r.end_time, "deleted_time": None, "source_version": "",
        "lifecycle_stage": ACTIVE,
    } for r in new]
    out.tags = [{"run_uuid": r.run_id, "key": k, "value": v[:MAX_TAG_VAL_LENGTH]}
                for r in new for k, v in tags_of[r.run_id].items()]
    out.params = [{"run_uuid": r.run_id, "key": p.key, "value": p.value[:MAX_PARAM_VAL_LENGTH]}
                  for r in new for p in r.params]
    old = [r for r in runs if not r.create]
    out.retag = [(r.run_id, k, v[:MAX_TAG_VAL_LENGTH]) for r in old for k, v in r.tags.items()]
    out.renamed = [(v, i) for i, k, v in out.retag if k == RUN_NAME_TAG]  # MLflow renames the run too
    out.ended = [{"run_uuid": r.run_id, "status": r.status, **({} if r.end_time is None else {"end_time": r.end_time})}
                 for r in old if r.status]  # no end time: reopened (RUNNING), the old end time kept
    for r in runs:
        if not r.metrics:
            continue
        keys, values, stamps, steps = zip(*r.metrics, strict=True)
        if _all_finite(values):
            flags: Iterable[bool] = repeat(False)
        else:
            clean = [sanitize(v) for v in values]
            flags, values = [c[0] for c in clean], tuple(c[1] for c in clean)
        # MLflow de-duplicates identical values. In (run, key, step) order, the order of the
        # metrics table's two run indexes: sqlite inserts them 10% faster than in any other.
        rows = sorted(set(zip(repeat(r.run_id), keys, values, stamps, steps, flags)), key=_HISTORY_ORDER)
        out.metrics += rows
        # the latest value per key, by MLflow's rule: the last of its key in that order, and of two
        # records of one run, the larger
        for key, row in {(r.run_id, row[KEY]): row for row in rows}.items():
            have = out.latest.get(key)
            if have is None or _HISTORY_ORDER(row)[1:] > _HISTORY_ORDER(have)[1:]:
                out.latest[key] = row
    return out


_HISTORY_ORDER = itemgetter(KEY, STEP, TIMESTAMP, VALUE)  # within one run


def _all_finite(values: Sequence[float]) -> bool:
    """Whether no value is NaN or infinite (their sum is then finite, unless it overflows: the
    common case decided at C speed, the rare one value by value)."""
    try:
        return math.isfinite(sum(values))
    except OverflowError:
        return False


def stale_latest(rows: RunRows) -> list[tuple[str, str]]:
    """The (run, key) pairs of runs created earlier whose latest value the store already has."""
    return [key for key in rows.latest if key[0] not in rows.new_ids]


def merge_latest(rows: RunRows, stored: Iterable[tuple[str, str, int, int, float]]) -> list[tuple[str, str]]:
    """Compare the store's latest rows ``(run, key, step, timestamp, value)`` with ``rows``': drop
    from ``rows.latest`` those the store has more recent, and return those to replace."""
    replace = []
    for run_uuid, key, step, ts, value in stored:
        mine = rows.latest[(run_uuid, key)]
        if (mine[STEP], mine[TIMESTAMP], mine[VALUE]) > (step, ts, value):
            replace.append((run_uuid, key))
        else:
            del rows.latest[(run_uuid, key)]
    return replace
