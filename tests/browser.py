"""Headless Chromium against a real ``mlflow server``: what a user sees in the MLflow UI."""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVING = re.compile(r"Uvicorn running on |Listening at: ")  # the server's line once its socket listens
SERVER_GUARD_S = 120  # catches a server that never starts; not a speed claim


def start_mlflow_server(args: list[str], log: Path, **popen: Any) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server --host 127.0.0.1 --port <free> *args`` in a session of its own, its
    output copied to ``log``; return the process and its URL once it answers ``/health``. Started
    on an event: its line that the socket listens (read as it is printed), then one request, which
    waits for the server's worker to take it; a server that exits first, or prints nothing of the
    kind within the hang guard, fails with the end of its log."""
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
    proc = subprocess.Popen([*cmd, "server", "--host", "127.0.0.1", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **popen)
    serving = threading.Event()

    def copy() -> None:  # the server's output to its log, all of it (a full pipe would stall the server)
        assert proc.stdout is not None
        with open(log, "wb") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                if SERVING.search(line.decode(errors="replace")):
                    serving.set()
        serving.set()  # the server ended: the check below says so

    threading.Thread(target=copy, name="mlflow-server-log", daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    if not serving.wait(SERVER_GUARD_S) or proc.poll() is not None:
        stop_mlflow_server(proc)
        raise AssertionError(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
    try:
        with urllib.request.urlopen(url + "/health", timeout=SERVER_GUARD_S) as resp:
            assert resp.status == 200, resp.status
    except BaseException:
        stop_mlflow_server(proc)
        raise
    return proc, url


def stop_mlflow_server(proc: subprocess.Popen) -> None:
    """Stop a server :func:`start_mlflow_server` started, and the processes it started (its session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def mlflow_server(store_uri: str, log: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 and a free port, serving ``store_uri``; yields its URL."""
    proc, url = start_mlflow_server(["--workers", "1", "--backend-store-uri", store_uri], log)
    try:
        yield url
    finally:
        stop_mlflow_server(proc)


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


class Page:
    """A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    JSON messages ended by NUL on file descriptors 3 and 4; no WebSocket library needed), with a
    profile of its own: open a URL, run JavaScript, click where a user clicks.

    Time in the page is virtual: :meth:`settle` lets its scripts and fetches run for ``budget_ms``
    of page time (Chromium's virtual-time budget, as ``--virtual-time-budget``) and returns when
    Chromium says that budget is spent, not after a wall-clock wait."""

    def __init__(self, profile: Path, size: tuple[int, int] = (1600, 1000), log: Any = None) -> None:
        import json
        import os

        self._json = json
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()

        def pipes_at_3_and_4() -> None:
            read, write = os.dup(to_child), os.dup(from_child)  # above 4: neither is overwritten by the other
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
             "--remote-debugging-pipe", "about:blank"],
            preexec_fn=pipes_at_3_and_4, close_fds=False, stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buffer, self._id, self.events = b"", 0, []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def _send(self, method: str, params: dict, session: bool) -> int:
        import os

        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._out, self._json.dumps(message).encode() + b"\0")
        return self._id

    def _receive(self) -> dict:
        import os

        while b"\0" not in self._buffer:
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise AssertionError("chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return self._json.loads(raw)

    def call(self, method: str, *, session: bool = False, **params) -> dict:
        """Send one DevTools command and return its result (events that arrive meanwhile are kept)."""
        wanted = self._send(method, params, session)
        while True:
            message = self._receive()
            if message.get("id") == wanted:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str) -> dict:
        """The next event ``method`` (kept ones first)."""
        for i, message in enumerate(self.events):
            if message.get("method") == method:
                return self.events.pop(i)
        while True:
            message = self._receive()
            if message.get("method") == method:
                return message
            self.events.append(message)

    def settle(self, budget_ms: int = 15000) -> None:
        """Let the page run for ``budget_ms`` of virtual time (fetches it waits on count as none)."""
        self.events = [m for m in self.events if m.get("method") != "Emulation.virtualTimeBudgetExpired"]
        self.call("Emulation.setVirtualTimePolicy", session=True, policy="pauseIfNetworkFetchesPending",
                  budget=budget_ms)
        self.wait_event("Emulation.virtualTimeBudgetExpired")

    def open(self, url: str, budget_ms: int = 15000) -> None:
        """Go to ``url`` as a user who types it, and let the page settle."""
        self.call("Page.navigate", session=True, url=url)
        self.settle(budget_ms)

    def js(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float, budget_ms: int = 15000) -> None:
        """A left click at page coordinates (mouse moved there, pressed, released), then settle."""
        self.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)
        self.settle(budget_ms)

    def text(self) -> str:
        return " ".join(str(self.js("document.body ? document.body.innerText : ''")).split())

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(AssertionError, OSError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        import os

        for fd in (self._in, self._out):
            with contextlib.suppress(OSError):
                os.close(fd)
