"""CPU cores this process's training may use: all of them, less those a helper process holds
(the tracking store's writer, :mod:`suite.tracking.writer`).

Why it matters: torch's intra-op threads wait for each other at every op, so a torch that runs
as many threads as there are cores, beside a busy helper process, stalls whenever the helper has
one of them (measured: a stacked linreg step 3.5x slower while the writer inserted rows).
"""

from __future__ import annotations

import os
import sys

_reserved = 0
_torch_threads: int | None = None  # torch's threads before reserve() brought them down


def available() -> int:
    """Cores left for training in this process and its workers (at least one)."""
    return max(1, (os.cpu_count() or 1) - _reserved)


def reserve() -> None:
    """Take one core for a helper process: from now on training uses one core fewer, and a torch
    already running more threads than that is brought down to it."""
    global _reserved, _torch_threads
    _reserved += 1
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() > available():
        if _torch_threads is None:
            _torch_threads = torch.get_num_threads()
        torch.set_num_threads(available())


def release() -> None:
    """Give back a core taken by :func:`reserve`, and torch the threads it had before."""
    global _reserved, _torch_threads
    _reserved = max(0, _reserved - 1)
    torch = sys.modules.get("torch")
    if not _reserved and _torch_threads is not None and torch is not None:
        torch.set_num_threads(_torch_threads)
        _torch_threads = None
