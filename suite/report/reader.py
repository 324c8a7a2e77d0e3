"""Read an experiment's runs back from MLflow into records the statistics and figures use.

One :class:`RunRecord` per spec (the latest run of each spec hash, a finished one preferred):
its section (experiment of the benchmark file), parsed params, status, final metrics and, on
demand, metric histories (:meth:`Runs.history` reads one per run and key, once).

Where the tracker writes the store itself (a local sqlite store, :mod:`suite.tracking.direct`),
it is read the same way, without importing MLflow (1.5–2.5 s); anywhere else through
``MlflowClient``. Both give the same records (``tests/test_report.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.errors import ReportError
from suite.hookspecs import FAMILIES as COMPONENT_FAMILIES
from suite.tracking.records import param_value
from suite.vocab import (
    DONE_STATUSES,
    TAG_BEST_TRIAL,
    TAG_DEVICE,
    TAG_HASH,
    TAG_HOST,
    TAG_KIND,
    TAG_REASON,
    TAG_REEVAL_OF,
    TAG_REEVALUATED,
    TAG_SECTION,
    TAG_STATUS,
    TAG_STUDY,
    TAG_STUDY_INDEX,
)

RUN_KIND = "run"
GRID_KIND = "grid"
REEVAL_KIND = "reeval"  # a tuned study's top trial re-run on a fresh seed
STUDY_KIND = "study"
TUNE_KIND = "tune"
PARENT_TAG = "mlflow.parentRunId"
BUDGET_KEYS = ("seed", "steps", "epochs", "eval_every")


@dataclass
class RunRecord:
    """One run: what it was (params), how it ended (status) and what it measured (metrics)."""

    run_id: str
    section: str
    spec_hash: str
    status: str
    params: dict[str, Any]
    final: dict[str, float]
    reason: str = ""
    start_time: int = 0
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: dict[str, str | None] = field(default_factory=dict)  # text artifacts read so far (None: absent)
    study: str = ""  # a tuned experiment's re-evaluation run: its Optuna study ...
    trial: int | None = None  # ... the trial it re-evaluates ...
    study_params: dict[str, Any] = field(default_factory=dict)  # ... the study's settings (its parent's params)
    study_best: int | None = None  # ... and the trial the study's tuning session named its winner
    study_index: int = 0  # ... which of its cell's independent studies it is (``--studies R``)
    study_tags: dict[str, str] = field(default_factory=dict)  # ... and its parent's tags (trials, edges)
    device: str = ""  # where it trained: its device and host (tags suite.device, suite.host)
    # values derived from its histories (suite.report.memo), shared, like them, by its bootstrap copies
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    @property
    def batch_size(self) -> int:
        return int(self.params.get("batch_size", 0))

    @property
    def ok(self) -> bool:
        return self.status in DONE_STATUSES

    def param(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    def config(self, drop: Iterable[str] = ("seed",)) -> tuple[tuple[str, Any], ...]:
        """The run's configuration as sorted pairs, without the keys in ``drop``."""
        skip = set(drop)
        return tuple(sorted((k, v) for k, v in self.params.items() if k not in skip))

    def metric(self, key: str) -> float | None:
        """The final value of ``key``: ``None`` if missing or not finite, ``inf`` for a diverged run."""
        if self.status == "diverged":
            return math.inf
        v = self.final.get(key)
        return float(v) if v is not None and math.isfinite(v) else None


@dataclass
class Runs:
    """An experiment's runs, grouped by section in the order the sections were first seen."""

    experiment: str
    tracking_uri: str
    records: list[RunRecord]
    parent_run_id: str | None
    source: Any = None  # where they were read: _DirectSource or _MlflowSource

    @property
    def sections(self) -> list[str]:
        return list(dict.fromkeys(r.section for r in self.records))

    def section(self, name: str) -> list[RunRecord]:
        return [r for r in self.records if r.section == name]

    def with_prefix(self, prefix: str) -> list[RunRecord]:
        return [r for r in self.records if r.section.startswith(prefix)]

    def history(self, record: RunRecord, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` pairs of one metric of one run, fetched once and cached."""
        if key not in record.histories:
            hist = self.source.history(record.run_id, key) if self.source is not None else []
            record.histories[key] = sorted((int(m.step), float(m.value)) for m in hist)
        return record.histories[key]

    def artifact_text(self, record: RunRecord, name: str) -> str | None:
        """The text of one of a run's artifacts (e.g. ``final_params.json``), read once and
        cached; ``None`` where the run has none of that name."""
        if name not in record.artifacts:
            record.artifacts[name] = self.source.artifact_text(record.run_id, name) if self.source is not None else None
        return record.artifacts[name]

    def log_files(self, run_id: str, files: Iterable[tuple[Path, str]]) -> None:
        """Log each ``(file, artifact folder)`` as an artifact of run ``run_id``."""
        self.source.log_files(run_id, list(files))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set ``tags`` on run ``run_id`` (replacing those of the same keys)."""
        self.source.set_tags(run_id, tags)


class _MlflowSource:
    """An experiment's runs through ``MlflowClient``."""

    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)

    def experiment_id(self, name: str) -> str | None:
        exp = self.client.get_experiment_by_name(name)
        return None if exp is None or exp.lifecycle_stage == "deleted" else exp.experiment_id

    def runs(self, experiment_id: str, kind: str) -> list[Any]:
        """The active runs of tag ``suite.kind`` = ``kind`` (``search_runs`` page by page)."""
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs([experiment_id], f"tags.`{TAG_KIND}` = '{kind}'", max_results=5000,
                                           page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def history(self, run_id: str, key: str) -> list[Any]:
        return self.client.get_metric_history(run_id, key)

    def artifact_text(self, run_id: str, name: str) -> str | None:
        return _downloaded_text(lambda dst: self.client.download_artifacts(run_id, name, dst))

    def log_files(self, run_id: str, files: list[tuple[Path, str]]) -> None:
        for path, folder in files:
            self.client.log_artifact(run_id, str(path), folder)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


class _DirectSource:
    """The same, from a local sqlite store read with ``sqlite3`` (:class:`DirectStore`)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def experiment_id(self, name: str) -> str | None:
        found = self.store.experiment(name)
        return None if found is None or found[1] == "deleted" else found[0]

    def runs(self, experiment_id: str, kind: str) -> list[Any]:
        return self.store.runs(experiment_id, tags={TAG_KIND: kind})

    def history(self, run_id: str, key: str) -> list[Any]:
        return self.store.metric_history(run_id, key)

    def artifact_text(self, run_id: str, name: str) -> str | None:
        from suite.tracking.direct import local_artifact_path

        folder = local_artifact_path(self.store.artifact_uri(run_id))
        if folder is None:  # artifacts on a remote store: through MLflow's artifact repository
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            repo = get_artifact_repository(self.store.artifact_uri(run_id))
            return _downloaded_text(lambda dst: repo.download_artifacts(name, dst))
        path = folder / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def log_files(self, run_id: str, files: list[tuple[Path, str]]) -> None:
        from suite.tracking.direct import write_artifacts
        from suite.tracking.records import PendingRun

        record = PendingRun(run_id, artifacts={f"{folder}/{path.name}": path.read_bytes() for path, folder in files})
        write_artifacts([record], lambda _run_id: self.store.artifact_uri(run_id))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from suite.tracking.records import PendingRun

        self.store.write(self.store.run_experiment(run_id), [PendingRun(run_id, tags=dict(tags))])


def _downloaded_text(download: Callable[[str], str]) -> str | None:
    """The text of an artifact ``download(folder)`` copies into a temporary folder (returning
    its path); ``None`` where the run has no such artifact."""
    import tempfile

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="suite-report-") as tmp:
        try:
            return Path(download(tmp)).read_text(encoding="utf-8")
        except (OSError, MlflowException):  # no such artifact
            return None


def read_runs(experiment: str, tracking_uri: str | None = None, *, sections: dict[str, list[str]] | None = None,
              studies: dict[str, list[str]] | None = None) -> Runs:
    """Load experiment ``experiment``'s runs: the latest run of each spec hash (a finished one
    preferred), with its section tag, params and final metrics; and the re-evaluation runs of
    the studies of tuned experiments (tag ``suite.section``): the latest run of each study,
    trial and seed, carrying the study's settings.

    ``sections`` (section -> spec hashes, from a benchmark file) restricts the report to those
    specs and assigns each to every section that lists it; ``studies`` (section -> study names)
    likewise restricts the tuned experiments to the file's studies. Raises :class:`ReportError`
    for an unknown or empty experiment, or a local store that does not exist (none is made), and
    :class:`~suite.errors.StoreError` for a store at a schema revision MLflow refuses."""
    from suite.stores import check_tracking_uri, quiet_store_logs, resolve_tracking_uri, sqlite_path
    from suite.tracking.direct import DirectStore

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_uri(uri, write=False)
    path = sqlite_path(uri)
    if path is not None and not path.exists():  # nothing to report on, and no empty store is made
        raise ReportError(f"MLflow experiment {experiment!r} does not exist: there is no tracking store at {path}; "
                          "give the store with --tracking-uri / MLFLOW_TRACKING_URI, or run suite run first")
    quiet_store_logs()
    store = DirectStore.open(uri)
    source: Any = _DirectSource(store) if store is not None else _MlflowSource(uri)
    experiment_id = source.experiment_id(experiment)
    if experiment_id is None:
        raise ReportError(f"MLflow experiment {experiment!r} does not exist at {uri}")
    latest: dict[str, Any] = {}
    for run in source.runs(experiment_id, RUN_KIND):
        h = run.data.tags.get(TAG_HASH)
        if not h:
            continue
        if h not in latest or _rank(run) > _rank(latest[h]):
            latest[h] = run
    tuned = _tuned_records(source, experiment_id, studies)
    if not latest and not tuned:
        raise ReportError(f"MLflow experiment {experiment!r} at {uri} has no runs to report on")
    records: list[RunRecord] = []
    if sections is None:
        for run in sorted(latest.values(), key=lambda r: r.info.start_time):
            records.append(_record(run, run.data.tags.get(TAG_SECTION, "runs")))
    else:
        for name, hashes in sections.items():
            records.extend(_record(latest[h], name) for h in hashes if h in latest)
    records += tuned
    if not records:
        raise ReportError(f"MLflow experiment {experiment!r} at {uri} has no runs of this benchmark file yet")
    parents = source.runs(experiment_id, GRID_KIND)
    if not parents:  # only tuned experiments: the tuning session's run holds the report
        parents = source.runs(experiment_id, TUNE_KIND)
    parent = max(parents, key=lambda r: r.info.start_time).info.run_id if parents else None
    return Runs(experiment, uri, records, parent, source)


def _tuned_records(source: Any, experiment_id: str, studies: dict[str, list[str]] | None) -> list[RunRecord]:
    """The re-evaluation runs of tuned experiments' studies (``studies``: section -> study names;
    ``None``: every study whose parent run has a ``suite.section`` tag): for each study, the runs
    under its latest parent run, of the trials that parent says its last invocation re-evaluated,
    one per (trial, seed), with the study's settings and its winner."""
    wanted = {name: sec for sec, names in studies.items() for name in names} if studies is not None else None
    if wanted is not None and not wanted:
        return []
    parents: dict[str, Any] = {}  # study -> its latest parent run (another storage's study of that name: older)
    for run in source.runs(experiment_id, STUDY_KIND):
        name = run.data.tags.get(TAG_STUDY)
        if (name in wanted) if wanted is not None else (TAG_SECTION in run.data.tags):
            if name not in parents or run.info.start_time > parents[name].info.start_time:
                parents[name] = run
    if not parents:
        return []
    latest: dict[tuple[str, str, int], Any] = {}
    for run in source.runs(experiment_id, REEVAL_KIND):
        tags = run.data.tags
        parent = parents.get(tags.get(TAG_STUDY, ""))
        if parent is None or tags.get(PARENT_TAG) != parent.info.run_id or TAG_REEVAL_OF not in tags:
            continue
        now = parent.data.tags.get(TAG_REEVALUATED)
        if now and tags[TAG_REEVAL_OF] not in now.split(","):  # a trial no longer among the top ones
            continue
        key = (tags[TAG_STUDY], tags[TAG_REEVAL_OF], int(param_value(run.data.params.get("seed", "0")) or 0))
        if key not in latest or _rank(run) > _rank(latest[key]):
            latest[key] = run
    out = []
    for (study, trial, _), run in sorted(latest.items(), key=lambda kv: kv[1].info.start_time):
        parent = parents[study]
        record = _record(run, wanted[study] if wanted is not None else parent.data.tags[TAG_SECTION])
        record.study, record.trial = study, int(trial)
        record.study_params = {k: param_value(v) for k, v in parent.data.params.items()}
        best = parent.data.tags.get(TAG_BEST_TRIAL)
        record.study_best = int(best) if best and best.isdigit() else None
        index = run.data.tags.get(TAG_STUDY_INDEX, "0")
        record.study_index = int(index) if index.isdigit() else 0
        record.study_tags = dict(parent.data.tags)
        out.append(record)
    return out


def _rank(run: Any) -> tuple[bool, int]:
    return run.data.tags.get(TAG_STATUS) in DONE_STATUSES, run.info.start_time


def _record(run: Any, section: str) -> RunRecord:
    tags = run.data.tags
    return RunRecord(
        run_id=run.info.run_id,
        section=section,
        spec_hash=tags.get(TAG_HASH, ""),
        status=tags.get(TAG_STATUS, "unknown"),
        # a component's name stays a name (the averager "none" is not None)
        params={k: v if k in COMPONENT_FAMILIES else param_value(v) for k, v in run.data.params.items()},
        final=dict(run.data.metrics),
        reason=tags.get(TAG_REASON, ""),
        start_time=run.info.start_time or 0,
        device=" on ".join(t for t in (tags.get(TAG_DEVICE, ""), tags.get(TAG_HOST, "")) if t),
    )
