"""Progress on stderr of a grid's runs or a set of studies' trials: done/total, failures,
diverged and the ETA.

On a terminal a tqdm bar (rate, elapsed, ETA; tqdm comes with Optuna) is redrawn in place;
otherwise (CI logs, pipes) one plain line is printed when the work ends. ``verbose`` (the CLI's
``--verbose``, :data:`VERBOSE`) prints a line per finished run or trial instead, and one per grid
run or tuning trial once its run is RUNNING in the store (``started: …``); ``quiet`` prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

VERBOSE = False  # the default of every Progress: set for the invocation by the CLI's --verbose


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Counts finished runs (or trials: ``unit``) of ``total``: a tqdm bar on a terminal, one
    line at the end in a log, a line per run with ``verbose`` (default :data:`VERBOSE`).
    ``label`` names the work in the bar and the final line."""

    def __init__(self, total: int, *, skipped: int = 0, quiet: bool = False, stream: TextIO | None = None,
                 verbose: bool | None = None, unit: str = "run", label: str = "") -> None:
        self.total, self.skipped, self.quiet = total, skipped, quiet
        self.verbose = VERBOSE if verbose is None else verbose
        self.unit, self.label = unit, label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.failed = self.diverged = 0
        self.start = time.monotonic()
        self.bar: Any = None

    @property
    def eta(self) -> float | None:
        if self.done == 0:
            return None
        return (time.monotonic() - self.start) / self.done * (self.total - self.done)

    def counts(self) -> str:
        parts = [f"failed {self.failed}", f"diverged {self.diverged}"]
        if self.skipped:
            parts.insert(0, f"skipped {self.skipped} done before")
        return "  ".join(parts)

    def line(self, last: str = "", *, final: bool = False) -> str:
        """The plain line of a log: counts, elapsed time, ETA (not in the ``final`` line) and the
        last run."""
        eta = self.eta
        parts = [f"{self.label + ': ' if self.label else ''}{self.done}/{self.total} {self.unit}s", self.counts(),
                 f"elapsed {_clock(time.monotonic() - self.start)}"]
        if not final:
            parts.append(f"eta {_clock(eta) if eta is not None else '?'}")
        return "  ".join(parts) + (f"  | {last}" if last else "")

    def update(self, name: str, status: str) -> None:
        """Count one finished run (``status`` as in :class:`suite.engine.loop.RunResult`); call it
        once the run is in the store: a user who reads "completed" takes it as kept. With
        ``verbose`` the counts and the run are written as one line."""
        self._count(status, f"{name}: {status}", lambda: self.line(f"{name}: {status}"))

    def started(self, names: list[str]) -> None:
        """With ``verbose``, a line per run now RUNNING in the store (call it once they are)."""
        if self.verbose and not self.quiet and self.bar is None:
            self.stream.write("".join(f"started: {name}\n" for name in names))
            self.stream.flush()

    def tick(self, text: str, status: str = "completed") -> None:
        """Count one finished unit that ``text`` describes (a trial's line); with ``verbose``
        ``text`` is written as it is."""
        self._count(status, text, lambda: text)

    def _count(self, status: str, last: str, verbose_line: Any) -> None:
        self.done += 1
        if status == "diverged":
            self.diverged += 1
        elif status not in ("completed", "stopped"):
            self.failed += 1
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.counts()}  | {last}", refresh=False)
            self.bar.update(1)
        elif self.verbose:
            self.stream.write(verbose_line() + "\n")
            self.stream.flush()

    def begin(self, total: int | None = None) -> None:
        """Start showing progress (of ``total`` units, if not given before)."""
        if total is not None:
            self.total = total
        self.start = time.monotonic()
        if self.quiet or not self.total:
            return
        if self.tty and not self.verbose:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, file=self.stream, unit=self.unit, dynamic_ncols=True, leave=True,
                            desc=self.label or None, postfix=self.counts())
            return
        if self.verbose:
            self.stream.write(self.line("starting") + "\n")
            self.stream.flush()

    def end(self) -> None:
        """Stop: close the bar, or in a log write the one final line (counts and elapsed time)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif not (self.quiet or self.verbose or not self.total or self.tty):
            self.stream.write(self.line(final=True) + "\n")
            self.stream.flush()
