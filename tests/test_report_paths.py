"""Report directories and artifact paths made from names stay where they belong: one sanitiser
(:func:`suite.specs.naming.file_name`) for absolute paths, ``..``, NUL and very long names."""

from __future__ import annotations

import os

import pytest

from suite.api.runs import report_dir
from suite.specs.naming import MAX_FILE_NAME, file_name

HOSTILE = ["/tmp/x", "../../x", "..", ".", ".hidden", "a\0b", "a/../../b", "x" * 10_000, "C:\\x", "é/ü", ""]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_a_name_becomes_one_path_component_under_reports(tmp_path, name):
    path = report_dir(name)
    assert path.parent.as_posix() == "reports"
    component = path.name
    assert component == file_name(name)
    assert component not in ("", ".", "..") and not component.startswith(".")
    assert "/" not in component and "\\" not in component and "\0" not in component
    assert len(component) <= MAX_FILE_NAME
    assert (tmp_path / path).resolve().parent == (tmp_path / "reports").resolve()


def test_long_names_stay_apart():
    assert file_name("x" * 500 + "a") != file_name("x" * 500 + "b")
    assert file_name("loss curves b32") == "loss_curves_b32"  # what figures were called before


@pytest.mark.slow
def test_a_benchmark_named_like_a_path_reports_under_reports(cli, workdir, monkeypatch):
    """``name: ../../escape`` and ``suite report /abs`` write under ./reports, nowhere else."""
    inner = workdir / "a" / "b"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    (inner / "bench.yaml").write_text("name: ../../escape\nexperiments:\n  e:\n    problem: linreg\n    epochs: 1\n"
                                      "    params: {optimizer.lr: [0.05, 0.1]}\n")
    cli("run", "bench.yaml", "--device", "cpu", "--quiet")
    assert (inner / "reports" / "_.._escape" / "report.html").is_file()
    assert not (workdir / "escape").exists()
    cli("run", "--lr", "0.05,0.1", "--epochs", "1", "--device", "cpu", "--quiet", "--experiment", "/abs")
    result = cli("report", "/abs", "--no-log")
    assert (inner / "reports" / "_abs" / "report.html").is_file(), result.output
    assert not os.path.exists("/abs")
    assert sorted(p.name for p in (inner / "reports").iterdir()) == ["_.._escape", "_abs"]
