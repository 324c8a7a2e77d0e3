"""Who owns a run or a trial: the label of the process that logs it, and whether that process is gone.

A label is ``host:stamp:pid`` (the pid last, where ``host:pid`` had it). The stamp names one
process for good: the boot it runs in (``/proc/sys/kernel/random/boot_id``) and its start time in
clock ticks since that boot (field 22 of ``/proc/<pid>/stat``). A pid alone does not: after a
reboot, or once pids wrap around, another process may hold it, and a run left RUNNING by a
killed process would then look owned for ever.

Runs (tag ``suite.owner``) and trials (user attribute ``suite.worker``) carry the label; the next
invocation on the same host reaps what a gone owner left running. Labels written before the stamp
(``host:pid``) are still read: for them a pid that exists is taken as the owner. Where ``/proc``
is missing (not Linux) the label has no stamp and the same rule applies.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from functools import lru_cache

BOOT_ID = "/proc/sys/kernel/random/boot_id"
_LABEL = re.compile(r"(?P<host>[^:]*)(?::(?P<stamp>[0-9a-f]+\.\d+))?:(?P<pid>\d+)")


@dataclass(frozen=True)
class Owner:
    """A parsed label: ``stamp`` is None for an old ``host:pid`` label."""

    host: str
    pid: int
    stamp: str | None = None


@lru_cache(maxsize=1)
def _boot() -> str | None:
    try:
        with open(BOOT_ID) as f:
            return f.read().strip().replace("-", "")[:12] or None
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of process ``pid`` from ``/proc`` (None if it has no entry)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0], fields[19]  # fields 3 and 22 of proc(5), counted after the command name


def stamp(pid: int) -> str | None:
    """The stamp of the running process ``pid`` (its boot and start time), or None without ``/proc``."""
    boot, stat = _boot(), _stat(pid)
    return f"{boot}.{stat[1]}" if boot and stat else None


def label(pid: int | None = None) -> str:
    """The label of process ``pid`` (default: this one): ``host:stamp:pid``, or ``host:pid``
    where no stamp can be read."""
    if pid is None or pid == os.getpid():
        return _own(os.getpid())  # read once: every run a process starts carries it
    return _label(pid)


@lru_cache(maxsize=2)
def _own(pid: int) -> str:
    return _label(pid)


def _label(pid: int) -> str:
    mark = stamp(pid)
    return f"{platform.node()}:{mark}:{pid}" if mark else f"{platform.node()}:{pid}"


def parse(text: str) -> Owner | None:
    """The owner a label names (new or old format), or None for anything else."""
    m = _LABEL.fullmatch(text or "")
    return Owner(m["host"], int(m["pid"]), m["stamp"]) if m else None


def gone(text: str) -> bool:
    """Whether the label names a process of this host that no longer runs: its pid is free, a
    zombie, or held by another process (another start time or boot). Labels of other hosts, and
    text that is no label, are never gone (they are not this host's to judge). This process's
    own pid counts as gone: an earlier invocation in it (a notebook, a test) has ended."""
    owner = parse(text)
    if owner is None or owner.host != platform.node():
        return False
    if owner.pid == os.getpid():
        return True
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process: its stamp still tells
        pass
    now = _stat(owner.pid)
    if now is None:  # no /proc: the pid exists, and that is all that can be known
        return False
    if now[0] == "Z":
        return True
    return owner.stamp is not None and owner.stamp != stamp(owner.pid)
