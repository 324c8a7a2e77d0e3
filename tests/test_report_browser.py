"""The HTML report in a real browser (headless Chromium): every figure loads, the console is clean."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from suite.report import build
from suite.report.reader import Runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-probe', ok + '/' + imgs.length);
});
</script>"""


def _chromium(tmp_path, page):
    profile = tmp_path / "profile"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_report_figures_load_in_chromium_without_console_errors(tmp_path):
    from test_report import _sampling_runs, _sweep_runs

    sweep = _sweep_runs(lambda m, b: {("SGD", 32): 400, ("mom", 32): 390, ("SGD", 1024): 80, ("mom", 1024): 40}[(m, b)])
    runs = Runs("browser", "sqlite://", sweep.records + _sampling_runs([0.01, 0.012, 0.011]).records, None)
    for r in runs.records:
        r.params.setdefault("problem", "nqm" if r.section.startswith("scaling") else "linreg")
        r.params.setdefault("problem.dim", 100)
        r.final.setdefault("theory_risk" if r.section.startswith("scaling") else "val_loss", 0.02)
    page, _ = build.write(runs, tmp_path / "report")
    html = page.read_text()
    n_figures = html.count("<img ")
    assert n_figures >= 3

    clean = _chromium(tmp_path, page)  # the report as written: no console message at all
    assert clean.returncode == 0, clean.stderr[-2000:]
    console = [line for line in clean.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []

    probed = tmp_path / "report" / "probed.html"  # the same page plus a script that counts decoded images
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    result = _chromium(tmp_path, probed)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'data-probe="(\d+)/(\d+)"', result.stdout)
    assert match, "the probe did not run: " + result.stdout[-500:]
    assert (int(match[1]), int(match[2])) == (n_figures, n_figures)
