"""Which specs stack, said before anything runs: `suite list` marks the components with a stacked
implementation, and `suite run --dry-run` shows the planned units (stacks and loop runs) with
their sizes."""

from __future__ import annotations

import json

from suite.registry import get_registry


def test_suite_list_marks_the_components_with_a_stacked_implementation(cli):
    data = json.loads(cli("list", "--format", "json").output)
    registry = get_registry()
    for d in data:
        if d["family"] in ("broken", "conflict"):
            continue
        assert d["stacked"] is (registry.get(d["family"], d["name"]).stacked is not None), d
    flags = {(d["family"], d["name"]): d["stacked"] for d in data if "stacked" in d}
    assert flags[("sampler", "shuffle")] and not flags[("sampler", "importance")]
    table = cli("list", "sampler").output.splitlines()
    assert "[stacked]" in next(line for line in table if line.strip().startswith("shuffle "))
    assert "[stacked]" not in next(line for line in table if line.strip().startswith("importance "))


def test_dry_run_shows_the_planned_stacks_and_loop_runs_with_their_sizes(cli, workdir):
    out = cli("run", "--optimizer", "sgd,precond", "--sampler", "shuffle,importance", "--seeds", "3", "--epochs", "2",
              "--stack-size", "4", "--device", "cpu", "--workers", "1", "--dry-run").output.splitlines()
    start = out.index("planned units (--engine auto, 1 x cpu): 2 stack(s) of 4, 2 runs, "
                      "6 run(s) through the per-run loop")
    assert out[start + 1:start + 4] == [
        "  stack of 4: linreg shuffle b32 2 epochs; optimizer/scheduler/averager precond/constant/none x3, "
        "sgd/constant/none x1",  # rows ordered by optimizer, so that each optimizer serves a block
        "  stack of 2: linreg shuffle b32 2 epochs; optimizer/scheduler/averager sgd/constant/none x2",
        "  loop: 6 run(s), one at a time (no stacked implementation: sampler 'importance')",
    ]
    assert out[-1] == "12 runs (dry run: nothing was run or logged)"
    loop = cli("run", "--seeds", "2", "--epochs", "2", "--engine", "loop", "--device", "cpu", "--workers", "1",
               "--dry-run").output
    assert "0 stack(s) of none runs, 2 run(s) through the per-run loop" in loop
    assert "  loop: 2 run(s), one at a time (--engine loop)" in loop
    assert not (workdir / "mlflow.db").exists()
