"""Reports: grid summary tables (``tables``), and the experiment report (``suite report``):
MLflow runs read back (``reader``), paired statistics (``stats``), the NQM scaling sweep
(``scaling``), the lecture's claims (``claims``), figures (``figures``) and the HTML/Markdown
document (``document``, ``build``)."""

from __future__ import annotations

from pathlib import Path


def write_report(experiment: str, tracking_uri: str | None, out_dir: str | Path, *,
                 benchmark: str | Path | None = None, log: bool = True) -> Path:
    """Write ``report.html`` and ``report.md`` for MLflow experiment ``experiment`` into
    ``out_dir`` and return the HTML's path; with ``log``, also log them as artifacts
    (``report/``) on the experiment's latest grid parent run.

    ``benchmark`` (a benchmark file) restricts the report to that file's runs and sections and
    adds their descriptions. Raises :class:`suite.errors.SuiteError` for an unknown or empty
    experiment."""
    from suite.report import build
    from suite.report.reader import read_runs

    sections, descriptions = None, None
    if benchmark is not None:
        from suite.registry import get_registry
        from suite.specs import benchfile

        bench = benchfile.load(benchmark, get_registry())
        sections = {s.name: [spec.hash for spec in s.specs] for s in bench.sections}
        descriptions = {s.name: s.description for s in bench.sections}
    runs = read_runs(experiment, tracking_uri, sections=sections)
    out = Path(out_dir)
    page, _ = build.write(runs, out, descriptions)
    if log:
        build.log_on_parent(runs, out)
    return page
