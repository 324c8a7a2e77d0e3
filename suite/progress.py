"""Progress of a grid on stderr: done/total, failures, diverged and the ETA.

On a terminal a tqdm bar (rate, elapsed, ETA; tqdm comes with Optuna) is redrawn in place;
otherwise (CI logs, pipes) one plain line is printed per finished run. ``quiet`` prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Counts finished runs of ``total``: a tqdm bar on a terminal, a line per run in a log."""

    def __init__(self, total: int, *, skipped: int = 0, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total, self.skipped, self.quiet = total, skipped, quiet
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

    def line(self, last: str = "") -> str:
        """The plain line of a log: counts, elapsed time, ETA and the last run."""
        eta = self.eta
        parts = [f"{self.done}/{self.total}", self.counts(), f"elapsed {_clock(time.monotonic() - self.start)}",
                 f"eta {_clock(eta) if eta is not None else '?'}"]
        return "  ".join(parts) + (f"  | {last}" if last else "")

    def update(self, name: str, status: str) -> None:
        """Count one finished run (``status`` as in :class:`suite.engine.loop.RunResult`); call it
        once the run is in the store: a user who reads "completed" takes it as kept."""
        self.done += 1
        if status == "diverged":
            self.diverged += 1
        elif status not in ("completed", "stopped"):
            self.failed += 1
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.counts()}  | {name}: {status}", refresh=False)
            self.bar.update(1)
            return
        self.stream.write(self.line(f"{name}: {status}") + "\n")
        self.stream.flush()

    def begin(self) -> None:
        if self.quiet or not self.total:
            return
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, file=self.stream, unit="run", dynamic_ncols=True, leave=True,
                            postfix=self.counts())
            return
        self.stream.write(self.line("starting") + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
