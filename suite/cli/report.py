"""``suite report``: the report of an experiment (or of a benchmark file's runs) from MLflow."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("target")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow tracking URI (default: MLflow's own, sqlite:///mlflow.db here).")
@click.option("--experiment", default=None,
              help="With a benchmark file: its MLflow experiment (default: the file's name).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for report.html and report.md (default: ./reports/EXPERIMENT/).")
@click.option("--no-log", is_flag=True, help="Do not log the report on the experiment's grid parent run.")
@click.option("--metric", default=None, metavar="METRIC[:min|max]",
              help="What the paired comparisons compare: any final metric the runs log and which way is better "
                   "(default val_loss:min; e.g. val_acc:max).")
def report(target, tracking_uri, experiment, out_dir, no_log, metric) -> None:
    """Write the report of TARGET: an MLflow experiment name, or a benchmark file (its runs).

    The report (self-contained HTML plus Markdown) holds the lecture's claims with verdicts
    computed from the runs, paired comparisons over seeds, and the figures; it is also logged on
    the experiment's latest grid parent run (artifacts under report/)."""
    from suite.errors import ReportError, SuiteError
    from suite.report.score import Score
    from suite.stores import resolve_tracking_uri
    from suite.tracking import diagnose

    by = Score.parse(metric)
    try:
        _report(target, tracking_uri, experiment, out_dir, no_log, by)
    except SuiteError:
        raise
    except Exception as exc:  # a store that cannot be read or written: one line, exit code 2, no traceback
        if isinstance(exc, OSError) and exc.filename and not _in_store(str(exc.filename), tracking_uri):
            raise ReportError(f"cannot write {exc.filename}: {exc.strerror or exc}") from None
        if not diagnose.store_failure(exc):
            raise
        raise ReportError(diagnose.cause(exc, resolve_tracking_uri(tracking_uri)).line) from None


def _in_store(filename: str, tracking_uri: str | None) -> bool:
    """Whether ``filename`` is the local store's file or lies beside it (its journal, its lock)."""
    from suite.stores import resolve_tracking_uri, sqlite_path

    path = sqlite_path(resolve_tracking_uri(tracking_uri))
    return path is not None and Path(filename).resolve().parent == path.resolve().parent


def _report(target, tracking_uri, experiment, out_dir, no_log, by) -> None:
    from suite.api.runs import report_dir
    from suite.errors import SuiteError
    from suite.report.build import write_report

    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise SuiteError(f"--out {str(out_dir)!r} is not a directory: give a directory for report.html and report.md")
    benchmark, studies = None, None
    path = Path(target)
    if target.endswith((".yaml", ".yml")) or _is_file(path):
        from suite.api.tuning import plan_benchmark, study_names
        from suite.registry import get_registry
        from suite.specs import benchfile

        benchmark, registry = path, get_registry()
        bench = benchfile.load(path, registry)
        exp = experiment or bench.name
        studies = study_names(plan_benchmark(bench, registry, experiment=exp, tracking_uri=tracking_uri,
                                             device="cpu"))
    else:
        exp = experiment or target
    out = out_dir or report_dir(exp)
    page = write_report(exp, tracking_uri, out, benchmark=benchmark, log=not no_log, by=by, studies=studies,
                        echo=click.echo)
    click.echo(f"report: {page}")


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; a name no file can have (too long, NUL) is not one."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
