"""Headless Chromium against a real ``mlflow server``: what a user sees in the MLflow UI."""

from __future__ import annotations

import contextlib
import html
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(store_uri: str, log: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 and a free port, serving ``store_uri``; yields its URL."""
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
    with open(log, "w") as out:
        proc = subprocess.Popen([*cmd, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                                 "--backend-store-uri", store_uri], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mlflow server did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def chromium(url: str, profile: Path, *, screenshot: Path | None = None, size: str = "1600,1000",
             budget_ms: int = 20000) -> str:
    """Load ``url`` (its JavaScript run for ``budget_ms`` of virtual time); return the DOM, or
    with ``screenshot`` write a PNG there."""
    out = ["--screenshot=" + str(screenshot)] if screenshot else ["--dump-dom"]
    res = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                          f"--virtual-time-budget={budget_ms}", *out, url],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def text_of(dom: str) -> str:
    """The visible text of a DOM dump, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())
