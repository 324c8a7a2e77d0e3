"""What a component factory is given when the engine builds a run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from suite.problem import Problem
    from suite.specs.spec import RunSpec


@dataclass
class BuildContext:
    """Everything a factory may need, filled in the order components are built.

    A problem factory sees ``seed`` and ``device``; a sampler also ``problem`` and ``n``; an
    optimizer also ``model``; a scheduler also ``optimizer``; an averager everything.
    ``total_steps`` and ``total_epochs`` are the run's length (a scheduler whose length
    defaults to "the whole run" uses the one matching its interval). ``data_seed`` is the seed a
    problem draws its data set from: the problem's ``data_seed`` hyperparameter where it has one
    and it is set, else the run seed (so by default the data follows the run seed).
    """

    seed: int
    device: torch.device
    batch_size: int
    total_steps: int = 0
    total_epochs: int = 0
    steps_per_epoch: int = 0
    n: int | None = None
    problem: Problem | None = None
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    generator: torch.Generator | None = None
    spec: RunSpec | None = None
    extra: dict[str, Any] | None = None
    data_seed: int | None = None

    def __post_init__(self) -> None:
        if self.data_seed is None:
            self.data_seed = self.seed


def derive_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose (``"data"``, ``"init"``, ``"sampling"``...) derived from the run
    seed, so that the streams are independent and each is reproducible on its own."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@contextmanager
def cpu_seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global CPU generator seeded with ``seed``, its state restored
    afterwards. Only the CPU generator: ``torch.manual_seed`` also queues a seeding of every
    accelerator's generators with the caller's stack trace (0.1 ms a call from a shallow stack, on
    the CPU-only build too), which ``fork_rng(devices=[])`` would then not restore."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


@contextmanager
def one_thread() -> Iterator[None]:
    """Run a block on one torch intra-op thread (restored afterwards). For many small operations
    in a row, such as building and checking each configuration of a grid once before it runs:
    on a busy machine each small op on two threads waits for the other core (a least-squares
    solve of 800 × 6 measured 21 ms on two threads, 0.03 ms on one)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
