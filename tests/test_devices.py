"""Device discovery, tested on CPU through explicit GPU counts and device lists."""

from __future__ import annotations

import pytest

from suite.errors import SpecError
from suite.exec.devices import resolve_devices


def test_auto_is_one_worker_per_gpu():
    assert resolve_devices("auto", gpus=4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert resolve_devices("cuda", gpus=2) == ["cuda:0", "cuda:1"]


def test_auto_without_gpu_uses_cpu_workers():
    assert resolve_devices("auto", workers=3, gpus=0) == ["cpu", "cpu", "cpu"]
    assert len(resolve_devices("auto", gpus=0)) >= 1


def test_explicit_lists():
    assert resolve_devices("cuda:1,cuda:0", gpus=2) == ["cuda:1", "cuda:0"]
    assert resolve_devices("cpu", workers=2, gpus=8) == ["cpu", "cpu"]


@pytest.mark.parametrize("text, gpus, match", [
    ("cuda", 0, "no CUDA device"), ("cuda:2", 2, "only 2 CUDA"), ("tpu", 0, "malformed"), ("cuda:x", 1, "malformed"),
])
def test_bad_devices(text, gpus, match):
    with pytest.raises(SpecError, match=match):
        resolve_devices(text, gpus=gpus)


def test_a_gpu_worker_is_pinned_to_its_device(monkeypatch):
    from suite.exec.pool import pin_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert pin_device("cuda:2") == "cuda:2"  # in this process: the device as named
    assert pin_device("cuda:2", isolate=True) == "cuda:0"  # a spawned worker sees only its GPU
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    assert pin_device("cpu", isolate=True) == "cpu"
