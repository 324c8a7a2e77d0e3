"""Device discovery: which workers to start for ``--device`` and ``--workers``.

``auto`` means one worker per visible GPU, or ``--workers`` CPU workers (default: the number
of cores) when there is none. Explicit lists (``cuda:0,cuda:1``, ``cpu``) are honoured as given,
which is also how the GPU logic is tested on machines without a GPU.
"""

from __future__ import annotations

import os

import torch

from suite.errors import SpecError


def cuda_count() -> int:
    """Number of visible CUDA devices (0 where torch has no CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


MAX_WORKERS = 1024  # worker processes on one machine: more is a typo (and a list of that many)


def resolve_devices(device: str = "auto", workers: int | None = None, *, gpus: int | None = None) -> list[str]:
    """One entry per worker process, each the device that worker is pinned to.

    ``gpus`` overrides the number of visible GPUs (for tests). Examples, with 2 GPUs visible:
    ``auto`` -> ``["cuda:0", "cuda:1"]``; ``cuda`` -> the same; ``cuda:1`` -> ``["cuda:1"]``;
    ``cpu`` with ``workers=3`` -> ``["cpu", "cpu", "cpu"]``.
    """
    n_gpu = cuda_count() if gpus is None else gpus
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise SpecError(f"--workers={workers} is out of range: must be in [1, {MAX_WORKERS}]")
    n_cpu = workers or os.cpu_count() or 1
    text = (device or "auto").strip().lower()
    if text == "auto":
        return [f"cuda:{i}" for i in range(n_gpu)] or ["cpu"] * n_cpu
    if text == "cpu":
        return ["cpu"] * n_cpu
    if text == "cuda":
        if n_gpu == 0:
            raise SpecError("--device cuda: no CUDA device is visible; use --device cpu or --device auto")
        return [f"cuda:{i}" for i in range(n_gpu)]
    devices = []
    for part in text.split(","):
        part = part.strip()
        if part == "cpu":
            devices.append("cpu")
            continue
        name, _, index = part.partition(":")
        if name != "cuda" or not index.isascii() or not index.isdigit() or len(index) > 6:
            raise SpecError(f"--device {device!r} is malformed: use auto, cpu, cuda, or a list like cuda:0,cuda:1")
        if int(index) >= n_gpu:
            raise SpecError(
                f"--device {part}: only {n_gpu} CUDA device(s) visible; use --device auto or a smaller index"
            )
        devices.append(f"cuda:{int(index)}")
    return devices
