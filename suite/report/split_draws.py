"""Independent pieces of the report's work shared between this process and one forked child:
the power's bootstrap draws, and the tuning studies' figures (:func:`suite.tuning.winners.study_pngs`).

Why (measured): on a ``make bench`` store the report evaluates every claim on 200 bootstrap draws
(:func:`suite.report.power.powers`), 0.27 s a draw at load 14 on the 2-core machine, about half
of the whole report; the draws are independent, and the report runs after the training, with a
core to spare. The child evaluates the second half of the draws while this process evaluates the
first, so the draws take about half the time (plus the child's replay of the first half's
resampling, to bring its generator to the same state: only the random choices, not the records
they select, so it costs next to nothing; the draws, and so the powers, are exactly those of one
process).

The child reads nothing from the store (a forked process must not use its parent's sqlite
connection): the histories and artifacts the draws need were read by the evaluation of the runs
themselves. A draw that would read one anyway, any failure of the child, or a child not done
within twice the time this process took for its half (at least :data:`WAIT_MIN_S`), makes this
process evaluate the second half itself. ``SUITE_REPORT_PROCESSES=1`` (or a system without ``fork``)
evaluates every draw here. ``tests/test_report_speed.py`` checks both give the same powers.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from typing import Any

from suite.exec.pool import fork_call

ENV = "SUITE_REPORT_PROCESSES"
WAIT_MIN_S = 30.0  # the least time the child is waited for once this process's half is done


class _NoStore:
    """The child's stand-in for the store: a read it would make sends the draws back here."""

    def __getattr__(self, name: str) -> Any:
        raise _NeedsStore(name)


class _NeedsStore(BaseException):  # past any `except Exception` of a claim
    pass


def processes() -> int:
    """How many processes evaluate the draws: ``SUITE_REPORT_PROCESSES`` (default 2), at most 2,
    1 without ``os.fork``."""
    try:
        wanted = int(os.environ.get(ENV, "2"))
    except ValueError:
        wanted = 2
    return max(1, min(2, wanted)) if hasattr(os, "fork") else 1


def draw_results(draw: Callable[[], Any], evaluate: Callable[[Any], Any], draws: int,
                 runs: Any = None, skip: Callable[[], Any] | None = None) -> list[Any]:
    """``evaluate(draw())`` for ``draws`` successive draws, in order (``draw`` advances a seeded
    generator, so the i-th draw is the same whichever process makes it). ``runs``: the object whose
    ``source`` (the store) the child must not use. ``skip``: advances the generator as ``draw``
    does, without making the draw (the child's replay of the first half; default ``draw``). The
    results must pickle."""
    half = draws // 2
    if processes() < 2 or half < 1:
        return [evaluate(draw()) for _ in range(draws)]
    def second_half() -> bytes:
        if runs is not None:
            runs.source = _NoStore()
        for _ in range(half):
            (skip or draw)()
        return pickle.dumps(("ok", [evaluate(draw()) for _ in range(draws - half)]))

    child = fork_call(second_half)
    try:
        started = time.monotonic()
        first = [evaluate(draw()) for _ in range(half)]
    except BaseException:
        child.kill()
        raise
    # a child that takes far longer than this process did (stuck, or starved of a core) is not waited for
    payload = child.result(deadline=time.monotonic() + max(WAIT_MIN_S, 2 * (time.monotonic() - started)))
    try:
        status, second = pickle.loads(payload or b"")
    except Exception:  # noqa: BLE001 - the child died before it answered, or was not waited for
        status, second = "failed", None
    if status != "ok" or len(second) != draws - half:
        second = [evaluate(draw()) for _ in range(draws - half)]  # this generator stands at draw `half`
    return first + second
