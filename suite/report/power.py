"""Each claim's power: the probability that its experiment gives a decisive verdict (reproduced or
contradicted), estimated from the runs themselves by a bootstrap.

A draw resamples the experiment: in each section of plain runs its seeds with replacement (every
run of a drawn seed comes along, so the variants of one seed stay paired; sections on the same
seeds share the draw, so they stay paired with each other), and across the tuned
cells their study indices and their fresh seeds with replacement (the same draw for every cell,
so methods stay paired on (study, seed)). A seed or study drawn twice is relabelled, so the
resampled runs present distinct seeds and studies again and the paired statistics still pair.
The claims are re-evaluated by their own functions on each draw; the power is the fraction of
draws whose verdict is decisive, with its 95% Wilson interval over the draws.

The draws reuse the runs' histories and artifacts as read once (the records share them), so a
draw costs one evaluation of the claims and no store access.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from suite.report.claims import CONTRADICTED, REPRODUCED, ClaimRow
from suite.report.reader import RunRecord, Runs
from suite.report.scaling import SCALING_PREFIX

TARGET = 0.95  # issue 25: every claim's power at least this
DRAWS = 200  # bootstrap draws per report: a Monte-Carlo standard error ≤ 0.035 (≤ 0.016 near 0.95)
SEED = 0
SEEDS_METHOD = "bootstrap over seeds"
STUDIES_METHOD = "bootstrap over studies and seeds"
UNDERPOWERED = "underpowered"
MORE = 2  # an underpowered claim's power is estimated again with this many times its seeds (and studies)
MORE_DRAWS = 100  # bootstrap draws of each of those estimates
NO_DATA = "no data"  # how a claim whose runs are missing starts its measured cell (claims._missing)
NO_RUNS = "no runs to resample"
HOW = (f"Power: the probability that a claim's experiment gives a decisive verdict (reproduced or contradicted), "
       f"estimated by a bootstrap of the runs: {DRAWS} draws (seeded) each resample every section's seeds with "
       "replacement (every variant of a drawn seed with it, so comparisons stay paired; for the tuned cells their "
       "studies and fresh seeds, the same draw for every cell), the claim's own rule is re-applied to the draw, "
       "and the power is the fraction of decisive draws, with its 95% Wilson interval over the draws (the "
       f"Monte-Carlo error). A claim below {TARGET:g} is flagged '{UNDERPOWERED}': its verdict would not "
       f"reliably come out decisive on a repeat of the experiment; beside the flag, its power estimated the same way "
       f"on experiments with {MORE}× the seeds, and for a tuned claim {MORE}× the studies ({MORE_DRAWS} draws of "
       f"{MORE}× as many seeds or studies from the measured ones), which says what to add. Where the NQM has a "
       "closed form (the steady-state claim) the column also gives the power on experiments simulated from it: "
       "the closed form's risks plus the measured seed-to-seed scatter, the claim's rule applied to each.")


@dataclass(frozen=True)
class Power:
    """A claim's power: ``decisive`` of ``draws`` bootstrap draws gave a decisive verdict."""

    decisive: int
    draws: int
    method: str
    reproduced: int = 0
    more: tuple[tuple[str, float], ...] = ()  # an underpowered claim's power with MORE× seeds / studies

    @property
    def value(self) -> float:
        return self.decisive / self.draws if self.draws else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson interval of the power over the draws (its Monte-Carlo uncertainty)."""
        return wilson(self.decisive, self.draws)

    @property
    def underpowered(self) -> bool:
        """Below the target power (a claim without runs has no power to speak of: not flagged)."""
        return self.draws > 0 and self.value < TARGET

    def text(self) -> str:
        """E.g. '0.97 [0.94, 0.99] (bootstrap over seeds, 200 draws)', flagged if below the target."""
        if not self.draws:
            return f"n/a ({self.method})"
        low, high = self.interval
        out = f"{self.value:.2f} [{low:.2f}, {high:.2f}] ({self.method}, {self.draws} draws)"
        if not self.underpowered:
            return out
        return out + f"; {UNDERPOWERED}" + (f": {self.advice()}" if self.more else "")

    def advice(self) -> str:
        """What adding replicates gives, e.g. '2× seeds 0.41, 2× studies 0.93' (empty if not estimated)."""
        return ", ".join(f"{MORE}× {what} {value:.2f}" for what, value in self.more)


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default); (0, 1) for ``n`` = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def resample(runs: Runs, rng: np.random.Generator, seeds: int = 1, studies: int = 1) -> Runs:
    """One bootstrap draw of ``runs``: seeds per section of plain runs (one draw for the sections
    run on the same seeds, so they stay paired across sections too), and (study index, fresh seed)
    across the tuned cells, drawn with replacement; a repeated seed or study gets a fresh label
    (the first draw of each keeps its own), so every drawn replicate is a distinct one. ``seeds``
    and ``studies`` times as many are drawn as there are (an experiment that many times larger).
    :class:`Resampler` makes many draws of the same runs."""
    return Resampler(runs, seeds, studies).draw(rng)


# one draw's choices: seed pool -> drawn (seed, label)s; drawn study indices; drawn (fresh seed, label)s
Choice = tuple[dict[tuple[int, ...], list[tuple[int, int]]], list[int], list[tuple[int, int]]]


class Resampler:
    """Draws of :func:`resample` from one ``runs``: its grouping by section, seed and study is made
    once, and a draw's random choices (:meth:`choose`) apart from the records they select
    (:meth:`build`), so that skipping a draw (:mod:`suite.report.split_draws`' child, which brings its
    generator to the state of its first draw) costs the generator's calls alone."""

    def __init__(self, runs: Runs, seeds: int = 1, studies: int = 1) -> None:
        self.runs, self.seeds, self.studies = runs, seeds, studies
        self.first_fresh = max((r.seed for r in runs.records), default=0) + 1
        plain = [r for r in runs.records if r.trial is None]
        # per section (in order): its runs by seed, and its pool of seeds (sections on the same pool share a draw)
        self.sections: list[tuple[dict[int, list[RunRecord]], tuple[int, ...]]] = []
        for section in dict.fromkeys(r.section for r in plain):
            by_seed: dict[int, list[RunRecord]] = {}
            for r in plain:
                if r.section == section:
                    by_seed.setdefault(r.seed, []).append(r)
            self.sections.append((by_seed, tuple(sorted(by_seed))))
        tuned = [r for r in runs.records if r.trial is not None]
        self.cells: dict[tuple[int, int], list[RunRecord]] = {}
        for r in tuned:
            self.cells.setdefault((r.study_index, r.seed), []).append(r)
        self.study_pool = sorted({r.study_index for r in tuned})
        self.seed_pool = sorted({r.seed for r in tuned})

    def choose(self, rng: np.random.Generator) -> Choice:
        """One draw's choices, in the generator's order: (pool -> drawn (seed, label)s, drawn
        study indices, drawn (fresh seed, label)s of the tuned cells)."""
        fresh = iter(range(self.first_fresh, 2**62))
        draws: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for _, pool in self.sections:
            if pool not in draws:
                draws[pool] = _draw(pool, rng, fresh, self.seeds)
        if not self.cells:
            return draws, [], []
        drawn_studies = [k for k, _ in _draw(self.study_pool, rng, iter(()), self.studies)]
        return draws, drawn_studies, _draw(self.seed_pool, rng, fresh, self.seeds)

    def build(self, choice: Choice) -> Runs:
        """The runs of one draw's choices (:meth:`choose`)."""
        draws, drawn_studies, drawn_seeds = choice
        out: list[RunRecord] = []
        for by_seed, pool in self.sections:
            for seed, label in draws[pool]:
                out += [_relabel(r, label) for r in by_seed[seed]]
        for new_index, k in enumerate(drawn_studies):
            for seed, label in drawn_seeds:
                out += [_relabel(r, label, new_index) for r in self.cells.get((k, seed), [])]
        runs = self.runs
        return Runs(runs.experiment, runs.tracking_uri, out, runs.parent_run_id, runs.source)

    def draw(self, rng: np.random.Generator) -> Runs:
        """One bootstrap draw (:func:`resample`)."""
        return self.build(self.choose(rng))


def _draw(values: Sequence[int], rng: np.random.Generator, fresh, times: int = 1) -> list[tuple[int, int]]:
    """``times × len(values)`` draws with replacement as (drawn value, its label): the value itself
    the first time, then the next label of ``fresh``."""
    seen: set[int] = set()
    out = []
    for i in rng.integers(0, len(values), size=times * len(values)):
        v = values[int(i)]
        out.append((v, v if v not in seen else next(fresh, v)))
        seen.add(v)
    return out


def _relabel(record: RunRecord, seed: int, study_index: int | None = None) -> RunRecord:
    """A copy of ``record`` as seed ``seed`` (and study ``study_index``, its study renamed to
    match); histories and artifacts are shared, read once for all draws."""
    out = object.__new__(RunRecord)  # a shallow copy, as dataclasses.replace, at a quarter of its cost
    out.__dict__.update(record.__dict__)  # (353,000 copies in a make bench report)
    out.params = {**record.params, "seed": seed}
    if study_index is not None:
        out.study_index, out.study = study_index, f"{record.study}#{study_index}"
    return out


def power(claim: Callable[[Runs], ClaimRow], runs: Runs, draws: int = DRAWS, seed: int = SEED,
          method: str = SEEDS_METHOD) -> Power:
    """The power of one claim (a function of the runs) on ``runs``, by ``draws`` bootstrap draws
    seeded with ``seed``."""
    return powers(lambda r: [claim(r)], runs, draws, seed, lambda _row: method)[0]


def powers(evaluate: Callable[[Runs], list[ClaimRow]], runs: Runs, draws: int = DRAWS, seed: int = SEED,
           method: Callable[[ClaimRow], str] | None = None) -> list[Power]:
    """The power of each row ``evaluate`` returns (e.g. :func:`suite.report.claims.evaluate`: all
    the claims on one draw at a time, so a shared computation such as the scaling sweep is made
    once per draw), in its order; ``method`` names how each row's power was estimated. An
    underpowered row also gets its power with :data:`MORE`× the seeds (and, on tuned runs, the
    studies): :data:`MORE_DRAWS` draws each, shared by all rows."""
    rows = evaluate(runs)
    decisive, reproduced = _tally(evaluate, runs, len(rows), draws, seed)
    name = method or method_of
    out = [Power(0, 0, NO_RUNS) if row.measured.startswith(NO_DATA) else Power(d, draws, name(row), r)
           for d, r, row in zip(decisive, reproduced, rows, strict=True)]
    low = [i for i, p in enumerate(out) if p.underpowered]
    if not low:
        return out
    more: dict[int, list[tuple[str, float]]] = {i: [] for i in low}
    tuned = any(r.trial is not None for r in runs.records)
    for what, factors in [("seeds", (MORE, 1))] + ([("studies", (1, MORE))] if tuned else []):
        found, _ = _tally(evaluate, runs, len(rows), MORE_DRAWS, seed, *factors)
        for i in low:
            if what == "seeds" or out[i].method == STUDIES_METHOD:
                more[i].append((what, found[i] / MORE_DRAWS))
    return [replace(p, more=tuple(more[i])) if i in more else p for i, p in enumerate(out)]


def _tally(evaluate: Callable[[Runs], list[ClaimRow]], runs: Runs, n_rows: int, draws: int, seed: int,
           seeds: int = 1, studies: int = 1) -> tuple[list[int], list[int]]:
    """Per row, of ``draws`` bootstrap draws (:func:`resample` with ``seeds`` and ``studies``):
    how many gave a decisive verdict, and how many reproduced."""
    from suite.report.split_draws import draw_results

    rng = np.random.default_rng(seed)
    decisive, reproduced = [0] * n_rows, [0] * n_rows
    resampler = Resampler(runs, seeds, studies)
    verdicts = draw_results(lambda: resampler.draw(rng), lambda drawn: [row.verdict for row in evaluate(drawn)],
                            draws, runs, skip=lambda: resampler.choose(rng))  # on two processes
    for drawn in verdicts:
        if len(drawn) != n_rows:
            raise ValueError("the claims evaluated to a different number of rows on a bootstrap draw")
        for i, verdict in enumerate(drawn):
            decisive[i] += verdict in (REPRODUCED, CONTRADICTED)
            reproduced[i] += verdict == REPRODUCED
    return decisive, reproduced


def method_of(row: ClaimRow) -> str:
    """How a row's power is estimated: over studies and seeds for a claim on the tuned sweep."""
    return STUDIES_METHOD if row.experiment.startswith(SCALING_PREFIX) else SEEDS_METHOD


def cell(found: Power, closed: Power | None = None) -> str:
    """A row's power cell: the bootstrap's, then the closed form's where the claim has one."""
    return found.text() + (f"; {closed.text()}" if closed is not None else "")


TAG_VALUE_MAX = 5000  # MLflow keeps tag values up to 8000 characters


def summary_section(doc: Any, rows: Sequence[ClaimRow], text: str) -> None:
    """A report's "Summary": ``text`` (:func:`summary`'s line) and each claim's verdict, also as the
    document's MLflow tags (``suite.claims`` and one ``suite.claims.NN`` per claim)."""
    from suite.vocab import TAG_CLAIMS

    doc.summary = text
    doc.heading("Summary")
    doc.para(text)
    doc.bullets([f"{c.verdict}: {c.claim}" for c in rows])
    doc.tags[TAG_CLAIMS] = text
    doc.tags.update({f"{TAG_CLAIMS}.{i:02d}": f"{c.verdict}: {c.claim}"[:TAG_VALUE_MAX]
                     for i, c in enumerate(rows, 1)})


def summary(rows: Sequence[ClaimRow], found: Sequence[Power], closed: dict[int, Power] | None = None) -> str:
    """One line: the verdict counts and the claims below the target power (by the bootstrap, or
    by ``closed``: row index -> its closed-form power)."""
    closed = closed or {}
    counts = {v: sum(r.verdict == v for r in rows) for v in dict.fromkeys(r.verdict for r in rows)}
    low = [f"{r.claim} ({min(p.value, closed[i].value if i in closed else 1.0):.2f}"
           + (f"; {p.advice()})" if p.more else ")")
           for i, (r, p) in enumerate(zip(rows, found, strict=True))
           if p.underpowered or (i in closed and closed[i].underpowered)]
    without = sum(not p.draws for p in found)
    text = f"claims: {', '.join(f'{n} {v}' for v, n in counts.items())}"
    text += f" ({without} without runs)" if without else ""
    return text + (f"; {len(low)} {UNDERPOWERED}: " + "; ".join(low) if low
                   else f"; every claim with runs has power ≥ {TARGET:g}")
