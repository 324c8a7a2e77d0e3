"""Where one invocation's time went: start-up, building, training, Optuna, tracking and reporting.

One clock per process (:data:`CLOCK`). Code marks what it does with ``with CLOCK.phase(name):``;
phases nest exclusively (time spent tracking inside training counts as tracking only; Optuna's
asks, tells, sampling, pruning and storage writes inside training count as ``optuna``). What no
phase claims, from the process's start (imports, plugin loading, planning), is start-up.
``suite run`` and ``suite tune`` print :meth:`Phases.line` at the end and tag their parent run
with :meth:`Phases.seconds` (tags ``suite.seconds.<phase>``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Iterator

from suite.vocab import PHASES


def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``; else since this module was imported)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


class Phases:
    """Exclusive phase timers of one process."""

    def __init__(self) -> None:
        self.spent = {p: 0.0 for p in PHASES}
        self._stack: list[str] = []
        self._since = 0.0
        self.engine_import_s: float | None = None
        self.notes: list[str] = []  # said once on the line (e.g. a fast path not taken, and why)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the block's time to ``name`` (and not to the phase it interrupts)."""
        self.enter(name)
        try:
            yield
        finally:
            self.leave()

    def enter(self, name: str) -> None:
        """Start counting time to ``name`` (:meth:`phase` without a context manager, for code
        called thousands of times a second; every :meth:`enter` needs its :meth:`leave`)."""
        now = time.perf_counter()
        if self._stack:
            self.spent[self._stack[-1]] += now - self._since
        self._stack.append(name)
        self._since = now

    def leave(self) -> None:
        """Stop counting time to the phase of the last :meth:`enter`."""
        now = time.perf_counter()
        self.spent[self._stack.pop()] += now - self._since
        self._since = now

    def reassign(self, src: str, dst: str, seconds: float) -> float:
        """Move up to ``seconds`` already counted to ``src`` over to ``dst`` (for time measured in
        worker processes while this one waited in ``src``); returns what was moved."""
        moved = max(0.0, min(seconds, self.spent[src]))
        self.spent[src] -= moved
        self.spent[dst] += moved
        return moved

    def seconds(self) -> dict[str, float]:
        """Seconds per phase so far; start-up is what no other phase claimed since the process began."""
        out = dict(self.spent)
        out["startup"] += max(0.0, process_age() - sum(self.spent.values()))
        return out

    def note(self, text: str) -> None:
        """Say ``text`` once, at the end of :meth:`line` (what made this invocation slower than it
        would have been)."""
        if text not in self.notes:
            self.notes.append(text)

    def line(self) -> str:
        """``time: 2.1 s start-up, 0.3 s building, ... (5.0 s in all)``, then the notes."""
        s = self.seconds()
        names = {"startup": "start-up"}
        parts = ", ".join(f"{s[p]:.1f} s {names.get(p, p)}" for p in PHASES)
        return f"time: {parts} ({sum(s.values()):.1f} s in all)" + "".join(f"; {n}" for n in self.notes)


CLOCK = Phases()
# What a worker needs before it trains: torch and the engine (named, not imported here: this module
# sits low in the import graph). torch._dynamo is no longer among them: see suite.engine.lazy_dynamo.
ENGINE_MODULES = ("torch", f"{__package__.rpartition('.')[0]}.engine.units")


def import_engine() -> float:
    """Import torch and the engine, once; return the seconds that took (what any fresh worker
    process pays before it can train)."""
    if CLOCK.engine_import_s is None:
        t0 = time.perf_counter()
        with CLOCK.phase("startup"):
            for name in ENGINE_MODULES:
                importlib.import_module(name)
        CLOCK.engine_import_s = time.perf_counter() - t0
    return CLOCK.engine_import_s
