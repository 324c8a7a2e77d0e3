"""The tuning protocol of a report's tuned experiments, and the winners at an edge of their space.

Choi et al. (2019, "On empirical comparisons of optimizers") show that the protocol decides a
ranking, so every tuned cell (experiment, variant, batch size) shows it: the search space, the
trials each study ran, the budget of a trial, the studies per cell, the seeds of a trial and the
fresh seeds of the re-evaluation. A protocol that is the same at every batch size is one row of
the table; where it differs, the row says it per batch size. A winner at an edge of its search
space (:mod:`suite.tuning.edges`: the optimum may lie beyond it) is marked and listed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from suite.errors import SuiteError
from suite.params import Space
from suite.report.document import Document
from suite.report.reader import RunRecord
from suite.tuning import edges
from suite.vocab import TAG_TRIALS, TAG_TRIALS_REQUESTED

VARIANT_FAMILIES = ("optimizer", "scheduler", "averager", "sampler")
COMPONENT_FAMILIES = ("problem", *VARIANT_FAMILIES)
SPACE_PREFIX = "space."


def spaces(record: RunRecord) -> dict[str, Space]:
    """``family.param`` -> the search space of the study ``record`` belongs to (its parent's params)."""
    out = {}
    for key, text in record.study_params.items():
        if key.startswith(SPACE_PREFIX) and isinstance(text, str):
            try:
                out[key[len(SPACE_PREFIX):]] = Space.from_dict(json.loads(text))
            except (ValueError, KeyError, TypeError, SuiteError):
                continue
    return out


def winner_edges(record: RunRecord, registry: Any = None) -> tuple[edges.Edge, ...]:
    """The edges of the winner ``record`` (one of its runs) in its study's search space;
    ``registry`` (where given) leaves out the ends that are the parameters' own bounds or the
    problem's lr stability cap."""
    space = spaces(record)
    values = {k: record.param(k) for k in space}
    if registry is None:
        return edges.find(values, space)
    components = {f: str(record.param(f)) for f in COMPONENT_FAMILIES}
    pinned = {k: v for k, v in record.params.items() if k.startswith(("problem.", "optimizer."))}
    return edges.find(values, space, edges.params_of(registry, components),
                      edges.stability_limits(registry, components, pinned))


def winners(records: Sequence[RunRecord], chosen: Mapping[str, RunRecord] = ()) -> dict[str, RunRecord]:
    """Study -> a run of its winner: ``chosen``'s (the report's own pick, e.g. the scaling
    sweep's), else the trial its tuning session named (``study_best``)."""
    out = dict(chosen)
    for r in records:
        if r.trial is not None and r.study not in out and r.trial == r.study_best:
            out[r.study] = r
    return out


def variant_of(record: RunRecord) -> str:
    """``sgd-constant-ema-none``: the study's components, as ``suite tune`` names its variants."""
    names = (record.study_params.get(f, record.param(f)) for f in VARIANT_FAMILIES)
    return "-".join("none" if n is None else str(n) for n in names)  # a parsed param "none" reads None


def _per_size(values: Mapping[int, str]) -> str:
    """One value where every batch size has it, else ``B=32: a; B=64: b``."""
    distinct = set(values.values())
    if len(distinct) == 1:
        return distinct.pop()
    return "; ".join(f"B={b}: {v}" for b, v in sorted(values.items()))


def _cell_protocol(cell: Sequence[RunRecord]) -> dict[str, str]:
    """The protocol of one tuned cell (its records: every re-evaluation run of its studies)."""
    first = cell[0]
    space = ", ".join(f"{k} {edges.option(s)}" for k, s in spaces(first).items()) or "none"
    studies: dict[str, list[RunRecord]] = {}
    for r in cell:
        studies.setdefault(r.study, []).append(r)
    trials = []
    for recs in studies.values():
        tags = recs[0].study_tags
        done, asked = tags.get(TAG_TRIALS, "?"), tags.get(TAG_TRIALS_REQUESTED, "?")
        trials.append(done if done == asked else f"{done} of {asked}")
    seeds: dict[tuple[str, int | None], set[int]] = {}
    for r in cell:
        seeds.setdefault((r.study, r.trial), set()).add(r.seed)
    per_trial = "/".join(map(str, sorted({len(s) for s in seeds.values()})))
    top = "/".join(map(str, sorted({sum(study == s for s, _ in seeds) for study in studies})))
    return {"space": space, "trials": ", ".join(dict.fromkeys(trials)),
            "budget": str(first.study_params.get("budget", "?")), "studies": str(len(studies)),
            "seeds": f"{first.study_params.get('seeds', '?')} per trial; {per_trial} fresh × top {top} trials"}


COLUMNS = ("space", "trials", "budget", "studies", "seeds")
HEADER = ["experiment", "variant", "batch sizes", "search space", "trials per study", "budget per trial",
          "studies per cell", "seeds (tuning; re-evaluation)"]


def rows(records: Sequence[RunRecord]) -> list[list[Any]]:
    """One row per (experiment, variant) of the tuned records, each column one value or one per batch size."""
    cells: dict[tuple[str, str], dict[int, list[RunRecord]]] = {}
    for r in records:
        if r.trial is not None:
            cells.setdefault((r.section, variant_of(r)), {}).setdefault(r.batch_size, []).append(r)
    out = []
    for (section, variant), by_size in cells.items():
        protocols = {b: _cell_protocol(cell) for b, cell in sorted(by_size.items())}
        out.append([section, variant, ", ".join(map(str, protocols)),
                    *(_per_size({b: p[c] for b, p in protocols.items()}) for c in COLUMNS)])
    return out


def section(doc: Document, records: Sequence[RunRecord], found: Mapping[str, tuple[edges.Edge, ...]]) -> None:
    """The report's "Tuning protocol": the table of :func:`rows`, and the cells whose winner is
    at an edge of its space (``found``: study -> its winner's edges)."""
    doc.heading("Tuning protocol")
    doc.para("How each tuned cell (experiment, variant, batch size) was tuned, as its studies' MLflow parent runs "
             "record it: the space searched, the trials each study counted (completed, pruned or diverged), a "
             "trial's budget, the independent studies per cell, the seeds each trial's value is read from, and the "
             "fresh seeds its top trials were re-run on (the cell's value comes from its winner's runs on them).")
    doc.table(HEADER, rows(records))
    by_study = {r.study: r for r in records if r.trial is not None}
    flagged = [f"{r.section} {variant_of(r)} B={r.batch_size} ({study}): {', '.join(e.text() for e in found[study])}"
               for study, r in by_study.items() if found.get(study)]
    if flagged:
        doc.para(f"⚠ {len(flagged)} winner{'s' if len(flagged) > 1 else ''} at the edge of the search space (within a "
                 f"factor {edges.LOG_FACTOR:g} of an end of a log space, or {edges.LINEAR_FRACTION:.0%} of the range "
                 "of a linear one): the optimum may lie beyond it, so the cell's value may be worse than the method's "
                 "best; widen the experiment's space.")
        doc.bullets(flagged)
    else:
        doc.para("No winner is at the edge of its search space.")


def study_edges(records: Sequence[RunRecord],
                chosen: Mapping[str, RunRecord] = ()) -> dict[str, tuple[edges.Edge, ...]]:
    """Study -> the edges of its winner (:func:`winners`), against the installed components' bounds."""
    found = winners(records, chosen)
    if not found:  # no tuned experiment: the plugins need not load
        return {}
    from suite.registry import get_registry

    registry = get_registry()
    return {study: winner_edges(r, registry) for study, r in found.items()}
