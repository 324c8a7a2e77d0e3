"""``make ui`` serves the runs without MLflow 3.17's job runner: no huey workers for GenAI jobs
the suite never submits (each about 250 MB)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.browser import free_port

ROOT = Path(__file__).resolve().parents[1]
SERVING = "Uvicorn running on"
JOB_STORAGE = "_MLFLOW_HUEY_STORAGE_PATH"  # mlflow.server.constants.HUEY_STORAGE_PATH_ENV_VAR: set when jobs run


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.mark.slow
def test_make_ui_starts_no_job_runner(tmp_path):
    port = free_port()
    proc = subprocess.Popen(["make", "--no-print-directory", "ui", f"UI_PORT={port}",
                             f"MLFLOW_TRACKING_URI=sqlite:///{tmp_path}/mlflow.db"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the event: the server says it serves
            seen.append(line)
            if SERVING in line:
                break
        assert any(SERVING in line for line in seen), "".join(seen)[-3000:]
        session = subprocess.run(["pgrep", "-a", "-s", str(proc.pid)], capture_output=True, text=True).stdout
        servers = [int(line.split()[0]) for line in session.splitlines() if "uvicorn" in line]
        assert servers, session
        # MLflow decides before it starts the server: with jobs on, the server gets their storage path
        env = environ(servers[0])
        assert JOB_STORAGE not in env and env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "false"
        assert "_job_runner" not in session and "huey" not in session, session
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
