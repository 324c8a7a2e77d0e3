"""Memoised report computations: the same inputs computed once per report, with the same results.

Why (measured): the claims are evaluated once on the runs and again on each of the 200 bootstrap
draws of their power (:mod:`suite.report.power`). On a ``make bench`` store (1,765 runs, 96
studies), cProfile of ``suite report`` at load 10 gave 184 s, of which the draws took 106 s:

- :func:`suite.report.stats.study_estimate` (a seeded two-level bootstrap, about 4 ms a call)
  was called 12,901 times, about 64 times per evaluation of the claims, for about 32 cells: the
  same cell's values asked for by several claims (50.7 s);
- :func:`suite.report.scaling.steps_to_target` read every re-evaluation run's history again on
  every draw: 297,000 calls for about 1,500 runs (15.9 s), although a draw's runs share their
  histories with the runs read.

Both are pure functions of their inputs (the bootstrap is seeded), so ``study_estimate`` keeps
each result under the values it was computed from, in the order that decides the random draws
(:func:`remembered`, a bounded cache), and a run's steps to a target are kept on the run's record
(:func:`on_record`, :attr:`suite.report.reader.RunRecord.memo`, shared by its bootstrap copies as
its histories are). With both (and the draws' records copied without ``dataclasses.replace``) the
same profile took 120 s, the draws 62 s; the report's Markdown and figures are byte-identical.

Off switch: ``SUITE_REPORT_MEMO=0`` computes everything every time (the same report, slower).
``tests/test_report_speed.py`` checks that both give the same values.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

ENV = "SUITE_REPORT_MEMO"
LIMIT = 65536  # results kept by :func:`remembered` (a report's draws need a few thousand)

T = TypeVar("T")
_RESULTS: OrderedDict[Hashable, Any] = OrderedDict()


def enabled() -> bool:
    """Whether results are remembered (``SUITE_REPORT_MEMO`` is not ``0``)."""
    return os.environ.get(ENV, "1").strip() != "0"


def remembered(key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, or what it returned before for ``key`` (a key that determines the result:
    the function's name and all of its inputs)."""
    if not enabled():
        return compute()
    try:
        value = _RESULTS[key]
    except KeyError:
        value = _RESULTS[key] = compute()
        if len(_RESULTS) > LIMIT:
            _RESULTS.popitem(last=False)
        return value
    _RESULTS.move_to_end(key)
    return value


def on_record(memo: dict[Hashable, Any], key: Hashable, data: object, compute: Callable[[], T]) -> T:
    """``compute()`` from a run's ``data`` (e.g. one of its histories), kept in the record's own
    ``memo`` under ``key``; recomputed where the record's copy holds other data than the one the
    value was computed from (a copy made with other histories)."""
    if not enabled():
        return compute()
    found = memo.get(key)
    if found is None or found[0] is not data:
        found = memo[key] = (data, compute())
    return found[1]
