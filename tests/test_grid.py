"""Grid expansion and benchmark-file validation (fast: nothing is trained)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from suite.errors import SpecError
from suite.registry import get_registry
from suite.specs import axes, benchfile

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, seeds", [("3", [0, 1, 2]), ("2-4", [2, 3, 4]), ("5,1", [5, 1]), ("7-7", [7])])
def test_seeds(text, seeds):
    assert axes.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "4-2", "a", "1,,2", "-1"])
def test_bad_seeds(text):
    with pytest.raises(SpecError):
        axes.parse_seeds(text)


def test_cross_product_with_a_tie_and_a_per_component_grid():
    reg = get_registry()
    comps = [{"optimizer": "sgd", "optimizer.momentum": m} for m in (0.0, 0.9)]
    tie = axes.tied_axis({"batch_size": [8, 64], "optimizer.lr": [0.01, 0.08]})
    specs = axes.expand(reg, axes.product([comps, tie, axes.axis("seed", [0, 1])]), {"epochs": 2})
    assert len(specs) == 8 and len({s.hash for s in specs}) == 8
    assert {(s.batch_size, s.param("optimizer.lr")) for s in specs} == {(8, 0.01), (64, 0.08)}
    # Identical resolved specs are kept once: lr 0.01 is sgd's default.
    same = axes.expand(reg, axes.product([axes.axis("optimizer.lr", ["0.01", 0.01])]), {"epochs": 1})
    assert len(same) == 1
    with pytest.raises(SpecError, match="same length"):
        axes.tied_axis({"batch_size": [8, 64], "optimizer.lr": [0.1]})


def test_cli_dry_run_counts_the_cross_product(cli, workdir):
    out = cli("run", "--lr", "0.01,0.1", "--momentum", "0,0.9", "--batch-size", "8,64", "--seeds", "2",
              "--epochs", "5", "--dry-run").output
    assert out.strip().splitlines()[-1].startswith("16 runs")
    assert len(set(re.findall(r"\b[0-9a-f]{16}\b", out))) == 16
    assert not (workdir / "mlflow.db").exists()


def test_cli_grid_errors_are_one_line(cli, workdir):
    for args, fragment in [
        (["--lr", "0.1,,0.2"], "malformed list"),
        (["--seeds", "0"], "--seeds '0' is malformed"),
        (["--seed", "1", "--seeds", "2"], "not both"),
        (["--optimizer", "sgd,sgdd"], "unknown optimizer 'sgdd'"),
        (["--lr", "0.1,-1"], "optimizer.lr=-1.0 is out of range"),
        (["--batch-size", "8,x"], "--batch-size='x' is malformed"),
        (["--device", "cuda:0"], "CUDA"),
        (["--workers", "0"], "--workers=0 is out of range"),
        (["--diverge-factor", "1"], "diverge factor 1.0 is out of range"),
    ]:
        result = cli("run", "--epochs", "1", *args, ok=False)
        lines = [x for x in result.output.splitlines() if x.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], (args, result.output)
    assert not (workdir / "mlflow.db").exists()


def test_shipped_benchmark_files_are_valid(tmp_path):
    reg = get_registry()
    for path in sorted((ROOT / "benchmarks").glob("*.yaml")):
        bench = benchfile.load(path, reg)
        assert bench.sections and all(s.specs or s.tune for s in bench.sections), path
    from suite.api.tuning import plan_benchmark

    lecture = benchfile.load(ROOT / "benchmarks" / "lecture.yaml", reg)  # its tuned experiments plan as studies
    requests = plan_benchmark(lecture, reg, device="cpu")
    plans = [p for request in requests for p in request.plans]
    # the same protocol for every method, but the trials of the one 2-D search (β tuned with the lr)
    trials = {p.section: request.trials for request in requests for p in request.plans}
    assert trials == {"scaling_sgd": 24, "scaling_momentum": 24, "scaling_precond": 24, "scaling_momentum_tuned": 96}
    assert {s.name for s in lecture.tuned} == {"scaling_sgd", "scaling_momentum", "scaling_precond",
                                               "scaling_momentum_tuned"}
    assert len(plans) == 5 * 8 * 3 and {p.section for p in plans} == {s.name for s in lecture.tuned}
    assert sorted({p.study_index for p in plans}) == [0, 1, 2]  # 3 independent studies per cell
    for p in plans:  # only the lr is tuned, and β with it where the experiment says so
        tuned = {"optimizer.lr", "optimizer.momentum"} if p.section == "scaling_momentum_tuned" else {"optimizer.lr"}
        assert dict(p.space).keys() == tuned
    readme = (ROOT / "docs" / "guide.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]  # the schema example in the guide
    (tmp_path / "readme.yaml").write_text(example)
    assert len(benchfile.load(tmp_path / "readme.yaml", reg).specs) == 72
    quick = benchfile.load(ROOT / "benchmarks" / "quick.yaml", reg)
    assert len(quick.specs) == 12
    momentum = next(s for s in quick.sections if s.name == "momentum")
    assert {(s.batch_size, s.param("optimizer.lr")) for s in momentum.specs} == {(8, 0.02), (64, 0.1)}


GOOD = """\
defaults:
  epochs: 2
experiments:
  a:
    optimizer:
      sgd: {momentum: [0.0, 0.9]}
    batch_size: [8, 16]
"""


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("experiments: {a: {epochs: 1, batch_size: [8, 16}}\n", 1, "malformed YAML"),
        ("experiments:\n  a:\n    epochs: 1\n\tbatch_size: 8\n", 4, "malformed YAML"),
        ("experiment:\n  a: {epochs: 1}\n", 1, "unknown key 'experiment' (did you mean 'experiments'?)"),
        ("experiments:\n  a:\n    epochs: 1\n    batchsize: 8\n", 4, "experiments.a.batchsize: unknown key"),
        ("experiments:\n  a:\n    epochs: 1\n    optimizer: [sgd, sgdd]\n", 4,
         "experiments.a.optimizer: unknown optimizer 'sgdd' (did you mean 'sgd'?)"),
        ("experiments:\n  a:\n    epochs: 1\n    optimizer:\n      sgd: {momentun: 0.9}\n", 5,
         "experiments.a.optimizer.sgd.momentun: optimizer 'sgd' has no hyperparameter 'momentun'"),
        ("experiments:\n  a:\n    epochs: 1\n    params:\n      optimizer.lr: [0.1, -1]\n", 5,
         "experiments.a.params.optimizer.lr: optimizer.lr=-1"),
        ("experiments:\n  a:\n    epochs: 1\n    tie:\n      - {batch_size: [8, 16], optimizer.lr: [0.1]}\n", 5,
         "same length"),
        ("experiments:\n  a:\n    epochs: 1\n    batch_size: 8\n    tie:\n      - {batch_size: [8, 16]}\n", 6,
         "'batch_size' is already given at line 4"),
        ("experiments:\n  a:\n    batch_size: 8\n", 2, "experiments.a: give exactly one budget"),
        ("experiments:\n  a:\n    epochs: 1\n    seeds: 0\n", 4, "experiments.a.seeds"),
        ("experiments:\n  a:\n    epochs: 1\n    batch_size: 900\n", 2, "experiments.a: --batch-size=900 is out"),
        ("experiments:\n  a:\n    epochs: 1\n  a:\n    epochs: 2\n", 4, "experiments.a: given twice"),
        ("", 1, "the file is empty"),
    ],
)
def test_bad_benchmark_files_name_file_line_and_key(cli, workdir, text, line, fragment):
    path = workdir / "bad.yaml"
    path.write_text(text)
    result = cli("run", str(path), ok=False)
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {path}:{line}: ") and fragment in lines[0], lines[0]
    assert not (workdir / "mlflow.db").exists()  # nothing was logged


def test_benchmark_file_rejects_grid_flags(cli, workdir):
    path = workdir / "good.yaml"
    path.write_text(GOOD)
    assert "4 runs" in cli("run", str(path), "--dry-run").output
    result = cli("run", str(path), "--lr", "0.1", ok=False)
    assert result.exit_code == 2 and "--lr cannot be combined with a benchmark file" in result.output


def test_preflight_leaves_plugin_bugs_to_the_run():
    """A factory that raises something other than a configuration error is a plugin bug: it does
    not stop the grid before it starts; the run records it as failed with its traceback."""
    from suite import hookimpl
    from suite.engine.loop import preflight, train
    from suite.registry import Registry
    from suite.specs.spec import resolve_spec

    class Broken:
        @hookimpl
        def suite_register_schedulers(self, register):
            def boom(ctx):
                raise RuntimeError("scheduler factory exploded")

            register(name="boom", factory=boom, description="raises", interval="epoch")

    reg = Registry.from_entry_points(extra_plugins=[(Broken(), "broken-dist", "0.1")])
    spec = resolve_spec(reg, components={"scheduler": "boom"}, batch_size=8, epochs=1)
    preflight([spec], reg)
    result = train(spec, "cpu", reg)
    assert result.status == "failed" and "scheduler factory exploded" in result.reason
    assert "RuntimeError" in result.traceback


def test_summary_groups_seeds_and_follows_a_variant_across_batch_sizes():
    """Seeds of a configuration pool into mean ± std; an lr tied to the batch size is part of the
    label but not of the variant, so one variant is one line across batch sizes."""
    from suite.report import tables

    reg = get_registry()
    comps = [{"optimizer": "sgd", "optimizer.momentum": m} for m in (0.0, 0.9)]
    tie = axes.tied_axis({"batch_size": [8, 64], "optimizer.lr": [0.01, 0.08]})
    specs = axes.expand(reg, axes.product([comps, tie, axes.axis("seed", [0, 1])]), {"epochs": 2})
    loss = {(0.0, 8): 1.0, (0.0, 64): 3.0, (0.9, 8): 2.0, (0.9, 64): 0.5}
    rows = [tables.GridRun("s", sp, "completed", loss[(sp.param("optimizer.momentum"), sp.batch_size)] + sp.seed)
            for sp in specs]
    rows[-1].status, rows[-1].val_loss = "diverged", None  # momentum 0.9, b64, seed 1
    stats = tables.config_stats(rows)
    assert len(stats) == 4
    by = {(c.label, c.batch_size): c for c in stats}
    plain8 = by[("lr=0.01 momentum=0.0", 8)]
    assert plain8.variant == "momentum=0.0"
    assert plain8.stat("val_loss") == pytest.approx((1.5, 0.5 ** 0.5))
    mom64 = by[("lr=0.08 momentum=0.9", 64)]
    assert mom64.stat("val_loss") == (0.5, 0.0) and mom64.count("diverged") == 1
    assert {c.variant for c in stats} == {"momentum=0.0", "momentum=0.9"}
    # b8: better on both seeds (paired interval excludes 0); b64: the lowest mean diverged on a seed
    assert [(b, lab) for _, b, lab, _, _ in tables.winners(stats)] == [(8, "lr=0.01 momentum=0.0")]
    assert "no significant difference" in tables.winner_lines(stats)[1]
    md = tables.table_markdown(stats)
    assert "| s | lr=0.08 momentum=0.9 | 64 | 2 | 0.5 ± 0 |  | 1 | 0 |" in md
    assert tables.table_csv(stats).splitlines()[0].startswith("section,configuration,batch_size")
    fig = tables.batch_size_figure(stats, "s")
    assert len(fig.axes[0].containers) == 2  # one errorbar line per variant
    tables.close(fig)


def test_seeds_in_a_tie_replace_the_defaults_seeds(tmp_path):
    """A tie may move the seed with a problem parameter (each seed its own data set); the defaults' seeds
    then step aside, as they do for an experiment's own `seeds:`."""
    (tmp_path / "b.yaml").write_text("defaults:\n  epochs: 1\n  seeds: 3\nexperiments:\n  a:\n    tie:\n"
                                     "      - {seed: [5, 6], problem.data_seed: [5, 6]}\n")
    bench = benchfile.load(tmp_path / "b.yaml", get_registry())
    assert sorted((s.seed, s.param("problem.data_seed")) for s in bench.specs) == [(5, 5), (6, 6)]
