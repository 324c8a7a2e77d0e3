"""Problem sizes checked against memory before anything is allocated.

A factory asks :func:`check_fits` with the bytes its largest tensors need (an estimate from its
sizes, on the generous side); a problem that cannot fit is a ``ValueError``, which the suite's
preflight turns into one line and exit code 2 (``problem.n=1e11`` is refused at once, not after
a terabyte allocation has failed).
"""

from __future__ import annotations

import os
import resource

GB = 1024**3


def memory_bytes() -> int:
    """What one process may allocate: the machine's physical memory, or less under an address
    space limit (``RLIMIT_AS``, ``ulimit -v``)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        total = min(total, soft)
    return total


def check_fits(problem: str, nbytes: int, sizes: str) -> None:
    """Raise ``ValueError`` (one line naming ``sizes``, e.g. ``n=1000, d=5``) if ``problem``'s
    tensors, about ``nbytes``, cannot fit in :func:`memory_bytes`."""
    have = memory_bytes()
    if nbytes > have:
        raise ValueError(f"problem {problem} with {sizes} needs about {nbytes / GB:,.1f} GB, more than the "
                         f"{have / GB:,.1f} GB this process may use: give smaller sizes")
