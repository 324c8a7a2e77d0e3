"""The one stop-signal policy of ``suite run``, ``suite tune`` and ``suite worker``.

The first SIGINT (Ctrl-C) or SIGTERM only sets a flag; work stops at the next safe point
(:func:`interrupted` raises ``KeyboardInterrupt`` there: between two evaluations of a run,
between two events of a worker, between two trials), never inside a tracking or storage call,
so every run in flight can be marked interrupted and every trial given back. A second signal
raises at once. Worker processes run under the same policy: the pool stops them with SIGTERM
and kills what is still alive a few seconds later. The command then exits with code 130.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODE = 130  # the shell's convention for a command stopped by Ctrl-C


class _State:
    received: int | None = None
    depth = 0  # nested blocks share the outermost installation


def interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a stop signal has arrived (call this at safe points)."""
    if _State.received is not None:
        raise KeyboardInterrupt(f"signal {_State.received}")


def stop_requested() -> bool:
    """Whether a stop signal has arrived (without raising)."""
    return _State.received is not None


def _handler(signum: int, frame: Any) -> None:
    if _State.received is not None:
        raise KeyboardInterrupt(f"signal {signum}")
    _State.received = signum


def ignore_stop_signals() -> None:
    """For a helper process whose parent handles the stop signals (the tracking store's writer,
    :mod:`suite.tracking.writer`): Ctrl-C and SIGTERM reach it too, with its process group, and
    it goes on with what its parent still sends while the parent marks its runs interrupted."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def default_stop_signals() -> None:
    """Python's own handling of the stop signals (a forked child that must not run its parent's
    handlers, which mark the parent's runs interrupted)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def on_parent_death(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (``PR_SET_PDEATHSIG``;
    a no-op elsewhere, where a child learns it from the end of its input)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


def wake_on_parent_death(parent: int, wake: int) -> None:
    """For a child that must finish its work when its parent dies (the tracking store's writer):
    the parent's death sends SIGUSR1, whose handler does nothing but write to the file
    descriptor ``wake`` (Python's wakeup fd), so that a ``select`` on ``wake`` returns. If
    ``parent`` died before this was set up, ``wake`` is written at once."""
    signal.set_wakeup_fd(wake, warn_on_full_buffer=False)
    signal.signal(signal.SIGUSR1, lambda *_: None)
    on_parent_death(signal.SIGUSR1)
    if os.getppid() != parent:  # the parent died before the line above
        os.write(wake, b"\0")


@contextlib.contextmanager
def stop_signals(*, ignore_sigint: bool = False) -> Iterator[None]:
    """Install the policy for the duration of the block (main thread only; elsewhere a no-op).

    ``ignore_sigint``: for worker processes, where Ctrl-C reaches the parent, which stops them."""
    if _State.depth:
        yield
        return
    _State.received = None
    try:
        previous = {sig: signal.signal(sig, _handler) for sig in STOP_SIGNALS}
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    _State.depth += 1
    late = None
    try:
        yield
        late = _State.received  # a signal after the block's last safe point still stops the command
    finally:
        _State.depth -= 1
        for sig, old in previous.items():
            signal.signal(sig, old)
        _State.received = None
    if late is not None and not ignore_sigint:  # (a worker process is stopped by its parent, which saw it)
        raise KeyboardInterrupt(f"signal {late}")
