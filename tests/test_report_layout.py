"""The report reads top-down: a summary with each claim's verdict, a table of contents whose
links reach their headings (HTML and Markdown), and figures sharp on high-density screens."""

from __future__ import annotations

import re
import struct

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from suite.report import build, lecture_claims  # noqa: E402
from suite.report.document import Document  # noqa: E402
from suite.report.reader import Runs  # noqa: E402


def test_the_contents_link_every_section_in_html_and_markdown(tmp_path):
    doc = Document("t")
    doc.contents()
    for title in ("The lecture's claims", "Batch-size scaling on the NQM, each method tuned", "sampling"):
        doc.heading(title)
        doc.para("text")
    page, md = doc.write(tmp_path)
    html = page.read_text()
    links = re.findall(r"<a href='#([^']+)'>", html)
    assert len(links) == 3 and all(f"id='{a}'" in html for a in links)
    md_links = re.findall(r"- \[[^\]]+\]\(#([^)]+)\)", md.read_text())
    assert md_links == ["the-lectures-claims", "batch-size-scaling-on-the-nqm-each-method-tuned", "sampling"]


def test_the_summary_comes_first_with_every_claims_verdict(tmp_path):
    runs = Runs("x", "sqlite://", [], None)
    rows = lecture_claims.evaluate(runs)
    build.build(runs).write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Summary") < md.index("## The lecture's claims")
    top = md[md.index("## Summary"):md.index("## The lecture's claims")]
    assert [line for line in top.splitlines() if line.startswith("- ") and "](#" not in line] == \
        [f"- {c.verdict}: {c.claim}" for c in rows]
    assert "- [The lecture's claims](#the-lectures-claims)" in top


def test_figures_are_drawn_at_twice_the_size_they_are_shown(tmp_path):
    doc = Document("t")
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    doc.figure(fig, "line", "a line")
    page, _ = doc.write(tmp_path)
    png = (tmp_path / "report_files" / "line.png").read_bytes()
    width = struct.unpack(">I", png[16:20])[0]  # the IHDR chunk's width
    assert width == 800 and "width='400'" in page.read_text()


def test_an_swa_curve_starts_where_averaging_starts():
    """SWA holds the initial model until its start step: the dashed curve begins there; an EMA's
    curve, which moves from the first step, is drawn whole."""
    from suite.report import figures
    from suite.report.reader import RunRecord

    def record(name: str, averaged: list[tuple[int, float]]) -> RunRecord:
        iterate = [(t, 1.0 / (1 + t)) for t in range(0, 101, 10)]
        return RunRecord(name, "averaging", "", "completed", {"seed": 0, "batch_size": 8, "averager": name},
                         {"val_loss": 0.01}, histories={"val_loss": iterate, "avg_val_loss": averaged})

    swa = record("swa", [(t, 1.0 if t < 50 else 0.5 / (1 + t)) for t in range(0, 101, 10)])
    ema = record("ema", [(t, 1.0 / (1 + 0.5 * t)) for t in range(0, 101, 10)])
    fig = figures.curves_figure(Runs("x", "sqlite://", [swa, ema], None), [swa, ema], "averaging")
    dashed = {line.get_label(): list(line.get_xdata()) for line in fig.axes[0].get_lines()
              if line.get_linestyle() == "--"}
    assert dashed["averager=swa (averaged)"][0] == 40 and dashed["averager=ema (averaged)"][0] == 0
    plt.close(fig)


def test_each_claim_links_its_section_and_names_its_runs_as_an_mlflow_filter(tmp_path):
    """The claims table's experiment cell links to the experiment's section of the report, and
    its runs cell is a filter that MLflow's runs search accepts."""
    from mlflow.utils.search_utils import SearchUtils

    from suite.report.reader import RunRecord

    recs = [RunRecord(f"s{seed}-{lr}-{b}", "steady_state", "", "completed",
                      {"seed": seed, "batch_size": b, "optimizer.lr": lr},
                      {"val_loss": lr / b}, histories={"val_loss": [(0, lr / b)]})
            for seed in (0, 1) for lr in (0.1, 0.2) for b in (1, 4)]
    build.build(Runs("x", "sqlite://", recs, None)).write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Steady-state risk"))
    assert "| [steady_state (NQM)](#steady_state) |" in row and "\n## steady_state\n" in md
    cell = row.split(" | ")[2]
    assert cell == "tags.`suite.section` = 'steady_state' (8 runs)"
    SearchUtils.parse_search_filter(cell.rsplit(" (", 1)[0])  # a filter MLflow accepts
    html = (tmp_path / "report.html").read_text()
    assert "<td><a href='#steady-state'>steady_state (NQM)</a></td>" in html and "id='steady-state'" in html
    # a claim that reads two experiments names both, under their common prefix
    mwe = [RunRecord(f"{section}-{seed}", section, "", "completed", {"seed": seed, "batch_size": 32}, {"val_loss": 0.1})
           for section, seeds in (("mwe", [42]), ("mwe_orders", [0, 1])) for seed in seeds]
    build.build(Runs("x", "sqlite://", mwe, None)).write(tmp_path / "mwe")
    md = (tmp_path / "mwe" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| The minimal working example"))
    cell = row.split(" | ")[2]
    assert cell == "tags.`suite.section` LIKE 'mwe%' (3 runs of mwe, mwe_orders)"
    SearchUtils.parse_search_filter(cell.split(" (")[0])
