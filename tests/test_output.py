"""What the commands print: a benchmark file's output is short and ends with where to look; a
line per run and per trial only with --verbose; progress in a log is one line per set of work."""

from __future__ import annotations

import json
import re

import pytest

from suite.cli import main
from tests.conftest import suite_cmd
from tests.test_report import TUNED_BENCH

TRIAL_LINE = re.compile(r"^\[[^\]]+\] trial \d+: ")
RUN_LINE = re.compile(r"^\d+/\d+ runs .*\| .+: \w+$")
# the whole output of `suite run` on TUNED_BENCH: a few lines of counts and pointers, the claims
# summary with one line per claim, the report and MLflow (lecture.yaml's budget is 80 lines)
LINE_BUDGET = 40


@pytest.mark.slow
def test_a_benchmark_files_output_is_short_and_ends_with_claims_report_and_runs_url(workdir, mlflow_client):
    (workdir / "tuned.yaml").write_text(TUNED_BENCH)
    result = suite_cmd("run", "tuned.yaml", cwd=workdir)  # not a terminal: no bar redrawn, no line per run
    assert result.returncode == 0, result.stderr
    out, err = result.stdout.splitlines(), result.stderr.splitlines()
    assert len(out) + len(err) <= LINE_BUDGET, result.stdout + result.stderr
    assert not [line for line in out + err if TRIAL_LINE.match(line) or RUN_LINE.match(line)]
    # progress in a log: one final line per set of work (the grid's runs, the tuned experiment's trials)
    assert [line.split("  ")[0] for line in err] == ["4/4 runs", "scaling_sgd: 2 studies: 8/8 trials"]
    assert any(line.startswith("per-experiment tables") for line in out)
    assert any(line.startswith("tuned scaling_sgd: 2 studies") and "studies' table is in the report" in line
               for line in out)

    # the end: the claims summary, one line per claim (its verdict first), the report, MLflow's runs table
    start = next(i for i, line in enumerate(out) if line.startswith("claims: "))
    report = (workdir / "reports" / "tuned" / "report.md").read_text()
    table = report[report.index("| claim |"):].split("\n\n")[0].splitlines()
    header, claims_table = [c.strip() for c in table[0].strip("|").split(" | ")], table[2:]
    verdicts = out[start + 1:start + 1 + len(claims_table)]
    assert len(verdicts) == len(claims_table) >= 10
    for line, row in zip(verdicts, claims_table, strict=True):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        claim, verdict = cells[header.index("claim")], cells[header.index("verdict")]
        assert line.split()[0] == verdict and claim[:60] in line
    counts = dict((v, k) for k, v in re.findall(r"(\d+) (reproduced|contradicted|inconclusive)", out[start]))
    for verdict in ("reproduced", "contradicted", "inconclusive"):
        assert int(counts.get(verdict, 0)) == sum(line.split()[0] == verdict for line in verdicts)
    rest = out[start + 1 + len(claims_table):]
    assert rest[0].startswith("report: reports/tuned/report.html")
    assert rest[1].startswith("MLflow: experiment 'tuned'")
    assert rest[2].startswith("browse: mlflow ui ")
    assert len(rest) == 4 and rest[3].startswith("  runs: http://127.0.0.1:5000/#/experiments/")
    key = rest[3].rpartition("viewStateShareKey=")[2]
    assert key, rest[3]  # the saved view: the runs table with the metric columns
    exp = mlflow_client.get_experiment_by_name("tuned")
    assert rest[3].split("/experiments/")[1].startswith(f"{exp.experiment_id}/runs?")
    view = json.loads(exp.tags[f"mlflow.sharedViewState.{key}"])
    assert "metrics.`val_loss`" in view["selectedColumns"]


TUNE = ["tune", "--problem", "linreg", "--optimizer", "sgd", "--batch-size", "16", "--trials", "2", "--budget",
        "epochs:1", "--pruner", "none", "--workers", "1", "--device", "cpu", "--format", "json"]


def test_tuning_shows_a_line_per_trial_only_with_verbose(workdir):
    from click.testing import CliRunner

    runner = CliRunner()
    plain = runner.invoke(main, [*TUNE, "--storage", str(workdir / "a.journal"), "--experiment", "a"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["studies"]  # stdout stays one JSON document
    (line,) = plain.stderr.splitlines()  # not a terminal: one line when the set of studies is done
    assert line.startswith("linreg: 1 study: 2/2 trials  failed 0  diverged ")

    verbose = runner.invoke(main, [*TUNE, "--storage", str(workdir / "b.journal"), "--experiment", "b", "--verbose"])
    assert verbose.exit_code == 0, verbose.output
    json.loads(verbose.stdout)
    trials = [line for line in verbose.stderr.splitlines() if TRIAL_LINE.match(line)]
    assert [t.split("] ")[1].split(":")[0] for t in trials] == ["trial 0", "trial 1"]
