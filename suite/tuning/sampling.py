"""The samplers and pruners of tuning studies: TPE seeded so that resumed and parallel workers
do not repeat each other's random points, with a constant liar for populations, a small study's
first population stratified over the search space (:class:`StratifiedStart`), and a last
population that refines around the incumbent (:class:`RefiningSampler`)."""

from __future__ import annotations

import math
import os
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

from suite.context import derive_seed
from suite.errors import TuneError

PRUNERS = ("median", "hyperband", "none")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """``median`` (prune below the median of completed trials at the same step, after 3
    completed trials), ``hyperband`` or ``none``."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuneError(f"unknown --pruner {name!r}: use {', '.join(PRUNERS)}")


def make_sampler(plan: Any, trials: int, study_seed: int | None, salt: str, *, population: int = 1,
                 design_seed: int | None = None) -> optuna.samplers.BaseSampler:
    """TPE, seeded from ``--study-seed``, the study's name and ``salt`` (worker and trials
    already done, so a resumed or parallel sampler does not repeat the same random points). In a
    small study, whose first population of ``population`` trials (asked before any has completed)
    reaches past TPE's start-up, that population is a Latin hypercube drawn from ``design_seed``
    (:func:`start_trials`, :class:`StratifiedStart`; the same for every worker of the study); its
    last :func:`refine_trials` trials refine around the incumbent (:class:`RefiningSampler`)."""
    # seeded from the name without its hash suffix: the draws of studies named before it are kept
    seed = None if study_seed is None else derive_seed(study_seed, f"{plan.legacy_name}|{salt}") % (2**32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=tpe_startup(trials), multivariate=True, group=True,
            constant_liar=True,  # a population's trials, asked together, stay apart
        )
    refine = refine_trials(trials)
    count = start_trials(trials, population, refine)
    if design_seed is not None and count >= 2 and os.environ.get(STRATIFY_SWITCH, "1") != "0":
        sampler = StratifiedStart(sampler, count=count, seed=design_seed)
    return RefiningSampler(sampler, start=trials - refine, count=refine) if refine else sampler


STRATIFY_SWITCH = "SUITE_STRATIFIED_START"  # "0": the random start is TPE's own independent draws


def start_trials(trials: int, population: int, refine: int = 0) -> int:
    """How many of a study's first trials :class:`StratifiedStart` places: its first population,
    where that is larger than TPE's start-up (those trials are all asked before any has
    completed, so TPE has nothing to learn from for the ones past its start-up), never the
    refining ones; none where TPE's start-up covers the first population (studies of 24 trials
    and more: there, simulated on the closed form, a stratified start made no difference that 48
    studies could show, docs/tuning.md)."""
    return max(0, min(trials - refine, population)) if population > tpe_startup(trials) else 0


def tpe_startup(trials: int) -> int:
    """TPE's start-up trials (independent random draws) in a study of ``trials``."""
    return min(10, max(3, trials // 3))


def design_seed(study_seed: int | None, plan: Any, uid: str) -> int:
    """The seed of a study's :class:`StratifiedStart` design: from ``--study-seed`` and the study's
    name where the study is seeded, else from its uid (random, kept in the study); the same in
    every worker, so that the trials' numbers index one design."""
    return derive_seed(study_seed, f"{plan.legacy_name}|design") if study_seed is not None else int(uid[:15], 16)


class _Wrapper(optuna.samplers.BaseSampler):
    """A sampler that places some trials itself (:meth:`_owns`: their parameters one by one, in
    ``sample_independent``) and leaves the others, and every callback, to ``base``."""

    base: optuna.samplers.BaseSampler

    def _owns(self, study: optuna.Study, trial: Any) -> bool:
        raise NotImplementedError

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        if self._owns(study, trial):
            return {}
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        if not search_space:
            return {}
        return self.base.sample_relative(study, trial, search_space)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)


class StratifiedStart(_Wrapper):
    """The first ``count`` trials of a study (its random start) at the points of a Latin
    hypercube: each float parameter's range (its log scale for a log parameter) cut into ``count``
    equal strata, trial ``i`` in stratum ``perm[i]`` at a uniform offset, ``perm`` a permutation
    drawn per parameter from ``seed``. Every stratum of every parameter gets exactly one trial,
    where independent draws leave gaps: with a population of 8 asked at once, a study of 8 trials
    is its random start, and the gap its best point leaves to the optimum is the study's tuning
    error (docs/tuning.md). Later trials, and parameters that are not floats, go to ``base``."""

    def __init__(self, base: optuna.samplers.BaseSampler, count: int, seed: int) -> None:
        self.base, self.count, self.seed = base, count, seed

    def point(self, param_name: str, number: int) -> float:
        """Trial ``number``'s coordinate in [0, 1) for ``param_name``."""
        rng = np.random.default_rng([self.seed % (2**63), zlib.crc32(param_name.encode())])
        perm, offset = rng.permutation(self.count), rng.random(self.count)
        return float((perm[number] + offset[number]) / self.count)

    def _owns(self, study: optuna.Study, trial: Any) -> bool:
        return trial.number < self.count

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        dist = param_distribution
        if not self._owns(study, trial) or not isinstance(dist, optuna.distributions.FloatDistribution):
            return self.base.sample_independent(study, trial, param_name, dist)
        u = self.point(param_name, trial.number)
        if dist.log:
            value = math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))
        else:
            value = dist.low + u * (dist.high - dist.low)
            if dist.step is not None:
                value = dist.low + round((value - dist.low) / dist.step) * dist.step
        return min(dist.high, max(dist.low, value))


REFINE_SHARE = 1 / 3  # of a study's trials, the last ones refine around the incumbent ...
REFINE_MAX = 8  # ... at most this many (one population)
REFINE_MIN_TRIALS = 12  # studies with fewer trials do not refine


def refine_trials(trials: int) -> int:
    """How many of a study's last trials :class:`RefiningSampler` spends around the incumbent."""
    return min(REFINE_MAX, int(trials * REFINE_SHARE)) if trials >= REFINE_MIN_TRIALS else 0


def refine_offsets(count: int, params: int) -> list[tuple[int, int]]:
    """The refinement trials' moves, (parameter index, signed point), one per trial: each
    parameter's share of the ``count`` trials, half on either side of the incumbent (point
    +1, -1, +2, -2, ... : the k-th point of that side, nearest first)."""
    out: list[tuple[int, int]] = []
    k = 1
    while len(out) < count:
        for p in range(params):
            out += [(p, k), (p, -k)]
        k += 1
    return out[:count]


def points_per_side(count: int, params: int, index: int, sign: int) -> int:
    """How many of the ``count`` moves of :func:`refine_offsets` go to parameter ``index`` on side ``sign``."""
    return sum(1 for p, k in refine_offsets(count, params) if p == index and (k > 0) == (sign > 0))


class RefiningSampler(_Wrapper):
    """A sampler (``base``, TPE) whose trials numbered ``start`` to ``start + count - 1`` refine
    around the incumbent (the best completed trial): each moves one float parameter of it, the
    others kept, to a point of an even grid between the incumbent and the nearest trial tried on
    that side of it (in that parameter, on its log scale for a log parameter; the range's end
    where none was), so the grid is as fine as the search got there (:func:`refine_offsets`,
    :func:`bracket_point`).

    The steps-to-target landscape of a tuned lr is a narrow valley at large batch sizes (the
    optimum close to the stability edge, with steps that rise steeply on both sides) that TPE,
    proposing populations of 8 with a constant liar, brackets only to ~10%; the grid reaches it
    to a few percent. A population's trials are asked together, so they share the incumbent and
    take distinct moves. Categorical and integer parameters, and trials outside the window or
    before any trial has completed, are left to ``base``."""

    def __init__(self, base: optuna.samplers.BaseSampler, start: int, count: int, round_size: int = 8) -> None:
        self.base, self.start, self.count, self.round = base, start, count, min(round_size, count)

    def _incumbent(self, study: optuna.Study, trial: Any) -> optuna.trial.FrozenTrial | None:
        if not self.start <= trial.number < self.start + self.count:
            return None
        done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
        if not done:
            return None
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        return pick(done, key=lambda t: t.value)

    def _owns(self, study: optuna.Study, trial: Any) -> bool:
        return self._incumbent(study, trial) is not None

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        best = self._incumbent(study, trial)
        floats = [] if best is None else _float_params(best)
        if best is None or param_name not in floats or not isinstance(
                param_distribution, optuna.distributions.FloatDistribution):
            if best is not None and param_name in best.params:
                return best.params[param_name]  # a parameter the refinement does not move: the incumbent's
            return self.base.sample_independent(study, trial, param_name, param_distribution)
        index, point = refine_offsets(self.round, len(floats))[(trial.number - self.start) % self.round]
        value = best.params[param_name]
        if floats[index] != param_name:
            return value
        tried = [t.params[param_name] for t in study.get_trials(deepcopy=False, states=_FINISHED)
                 if t.number != best.number and param_name in t.params]
        side = 1 if point > 0 else -1
        return bracket_point(value, tried, param_distribution, abs(point),
                             points_per_side(self.round, len(floats), index, side), side)


def _float_params(trial: optuna.trial.FrozenTrial) -> list[str]:
    return sorted(k for k, d in trial.distributions.items() if isinstance(d, optuna.distributions.FloatDistribution))


_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def bracket_point(value: float, tried: Sequence[float], dist: optuna.distributions.FloatDistribution, k: int,
                  n: int, side: int) -> float:
    """The ``k``-th of ``n`` evenly spaced points (1 = nearest) between ``value`` and the nearest of
    ``tried`` on ``side`` (+1 above, -1 below; the range's end where none is), on the log scale
    for a log distribution: the points split that gap into ``n + 1`` equal parts."""
    to, back = (math.log, math.exp) if dist.log else (float, float)
    x = to(value)
    edge = to(dist.high) if side > 0 else to(dist.low)
    others = [to(v) for v in tried if (to(v) - x) * side > 0]
    far = min(others, key=lambda y: abs(y - x)) if others else edge
    return min(dist.high, max(dist.low, back(x + (far - x) * k / (n + 1))))
