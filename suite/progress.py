"""Progress of a grid on stderr: done/total, failures, diverged and the ETA.

On a terminal one line is redrawn in place; otherwise (CI logs, pipes) one line is printed per
finished run. ``quiet`` prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Counts finished runs of ``total`` and renders a one-line status."""

    def __init__(self, total: int, *, skipped: int = 0, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total, self.skipped, self.quiet = total, skipped, quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.failed = self.diverged = 0
        self.start = time.monotonic()

    @property
    def eta(self) -> float | None:
        if self.done == 0:
            return None
        return (time.monotonic() - self.start) / self.done * (self.total - self.done)

    def line(self, last: str = "") -> str:
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        eta = self.eta
        parts = [
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}",
            f"failed {self.failed}", f"diverged {self.diverged}",
            f"elapsed {_clock(time.monotonic() - self.start)}",
            f"eta {_clock(eta) if eta is not None else '?'}",
        ]
        if self.skipped:
            parts.insert(1, f"skipped {self.skipped} done before")
        return "  ".join(parts) + (f"  | {last}" if last else "")

    def update(self, name: str, status: str) -> None:
        """Count one finished run (``status`` as in :class:`suite.engine.loop.RunResult`)."""
        self.done += 1
        if status == "diverged":
            self.diverged += 1
        elif status not in ("completed", "stopped"):
            self.failed += 1
        if self.quiet:
            return
        text = self.line(f"{name}: {status}")
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def begin(self) -> None:
        if not self.quiet and self.total:
            self.stream.write(self.line("starting") + ("" if self.tty else "\n"))
            self.stream.flush()

    def end(self) -> None:
        if not self.quiet and self.tty and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()
