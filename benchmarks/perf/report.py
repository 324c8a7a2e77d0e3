"""The report of a `make bench` store, with the report's speed paths off and on, timed as separate
processes, alternated (A, B, B, A, ...) after a warm-up of each; medians of the times and of the
per-pair ratios. Both reports must read the same (their Markdown, the generation time aside).

Row (target in brackets):
  j. `suite report benchmarks/lecture.yaml --no-log` on the store `make bench` wrote, with
     SUITE_REPORT_MEMO=0 SUITE_REPORT_PROCESSES=1 (every computation afresh, one process) vs
     the default (suite.report.memo, suite.report.split_draws)                      [> 1x]

It needs that store (default: ./mlflow.db after `make bench`; it is only read); without one the
row is skipped.

Usage: python benchmarks/perf/report.py [--store PATH] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from whole import ENV, ROOT, SUITE, alternate  # noqa: E402

OFF = {"SUITE_REPORT_MEMO": "0", "SUITE_REPORT_PROCESSES": "1"}


def _markdown(folder: Path) -> str:
    return re.sub(r"Generated \S+ \S+\.", "", (folder / "report.md").read_text(encoding="utf-8"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=str(ROOT / "mlflow.db"), help="the sqlite store make bench wrote")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    store = Path(args.store).resolve()
    if not store.is_file():
        print(f"j: skipped: no make bench store at {store} (run make bench, or give --store)")
        return
    work = Path(tempfile.mkdtemp(prefix="suite-perf-report-"))
    uri = f"sqlite:///{store}"  # read only: --no-log (a read-only URI is refused for a file with tuned sections)

    def cmd(out: str) -> list[str]:
        return [*SUITE, "report", str(ROOT / "benchmarks" / "lecture.yaml"), "--tracking-uri", uri, "--no-log",
                "--out", str(work / out)]

    try:
        r = alternate(cmd("off"), cmd("on"), work, args.repeats, env_a={**ENV, **OFF})
        same = _markdown(work / "off") == _markdown(work / "on")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'row':<4}{'A / B':<44}{'A s':>9}{'B s':>9}{'ratio':>10}  target")
    print(f"{'j':<4}{'report of make bench: paths off / on':<44}{r['a']:>9.1f}{r['b']:>9.1f}{r['ratio']:>9.2f}x  > 1x")
    print(f"j: every run (s): off {', '.join(f'{t:.1f}' for t in r['all_a'])}; "
          f"on {', '.join(f'{t:.1f}' for t in r['all_b'])}")
    print(f"j: the two reports read the same: {'yes' if same else 'NO'}")
    print(f"j: load average at the end: {os.getloadavg()[0]:.1f}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
