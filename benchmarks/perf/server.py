"""A grid on a tracking server (issue 31): a local `mlflow server` (sqlite backend), whole processes
timed, alternated (rotating order), after one untimed warm-up of each; medians of the times per run
and of the per-repetition ratios.

Row (target in brackets):
  i. N runs of a small linreg grid (`suite run --engine stacked`) written to the server by
     - plain MLflow: a process that logs the same runs (their tags, params, every metric value
       and their artifacts, read back from the suite's warm-up run) with `MlflowClient`: create
       the run, one synchronous `log_batch`, `log_text` each artifact, end it; no training;
     - the suite with synchronous writes (`SUITE_TRACKING_ASYNC=0`: its default on a server of
       this machine);
     - the suite with `SUITE_TRACKING_ASYNC=1` (`log_batch(synchronous=False)`, one wait per unit:
       its default on a server on another host);
     per run, whole process, and the suite's tracking phase (its `time:` line: MLflow's import
     included, as in plain's process); ratios plain / suite [>= 1x] and suite / async [> 1x to turn it on]
  i'. the same three against the same server behind a proxy that delays every chunk by half of
     `--rtt-ms` each way (a server across a network: a round trip of RTT instead of loopback's).

Usage: python benchmarks/perf/server.py [--repeats N] [--seeds S] [--rtt-ms MS (default 20; 0: row i alone)]
       python benchmarks/perf/server.py --replay RUNS.json URI EXPERIMENT   (plain MLflow's process)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from whole import ENV, PY, ROOT, SUITE, phase_seconds, run, time_line  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.browser import mlflow_server  # noqa: E402

GRID = ["run", "--problem", "linreg", "--optimizer", "sgd", "--lr", "0.01,0.03,0.1,0.3", "--momentum", "0,0.9",
        "--epochs", "3", "--engine", "stacked", "--force", "--quiet"]


def dump_runs(uri: str, experiment: str, out: Path) -> int:
    """Write the experiment's grid runs (tags, params, every metric value, artifacts' texts) to
    ``out`` as JSON; return how many there are."""
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = []
    for r in client.search_runs([exp.experiment_id], "tags.`suite.kind` = 'run'", max_results=5000):
        metrics = [[m.key, m.value, m.timestamp, m.step] for k in r.data.metrics
                   for m in client.get_metric_history(r.info.run_id, k)]
        tags = {k: v for k, v in r.data.tags.items() if k != "mlflow.parentRunId"}
        texts = {a.path: Path(client.download_artifacts(r.info.run_id, a.path, str(out.parent))).read_text()
                 for a in client.list_artifacts(r.info.run_id)}
        runs.append({"tags": tags, "params": r.data.params, "metrics": metrics, "artifacts": texts})
    out.write_text(json.dumps(runs))
    return len(runs)


def replay(path: Path, uri: str, experiment: str) -> None:
    """Plain MLflow's process: each run created with its tags, one synchronous ``log_batch`` of its
    params and metrics, its artifacts logged, ended."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    for r in json.loads(path.read_text()):
        run_id = client.create_run(exp_id, tags=r["tags"]).info.run_id
        client.log_batch(run_id, metrics=[Metric(*m) for m in r["metrics"]],
                         params=[Param(k, v) for k, v in r["params"].items()])
        for name, text in r["artifacts"].items():
            client.log_text(run_id, text, name)
        client.set_terminated(run_id, "FINISHED")


@contextmanager
def delayed(url: str, rtt_ms: float) -> Iterator[str]:
    """A TCP proxy in front of the server at ``url`` that forwards each chunk half a round trip
    (``rtt_ms`` / 2) after it arrives, in order, each way; yields the proxy's URL."""
    target = urlsplit(url)
    half = rtt_ms / 2000
    loop = asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                loop.call_later(half, writer.write, chunk)
            loop.call_later(half, writer.close)
        except ConnectionError:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--rtt-ms", type=float, default=20.0, help="row i': through a proxy with this round trip (0: none)")
    ap.add_argument("--replay", nargs=3, metavar=("RUNS", "URI", "EXPERIMENT"))
    args = ap.parse_args()
    if args.replay:
        replay(Path(args.replay[0]), args.replay[1], args.replay[2])
        return
    work = Path(tempfile.mkdtemp(prefix="suite-perf-server-"))
    try:
        with mlflow_server(f"sqlite:///{work}/server.db", work / "server.log") as uri:
            table = [("i", row) for row in measure(uri, work, args.repeats, args.seeds)]
            if args.rtt_ms > 0:
                with delayed(uri, args.rtt_ms) as far:
                    table += [("i'", row) for row in measure(far, work, args.repeats, args.seeds,
                                                             f" ({args.rtt_ms:g} ms round trip)")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'row':<4}{'per run':<60}{'A s':>9}{'B s':>9}{'ratio':>10}  target")
    for name, (label, a, b, ratio, target) in table:
        print(f"{name:<4}{label:<60}{a:>9.3f}{b:>9.3f}{ratio:>9.2f}x  {target}")
    print(f"i: load average at the end: {os.getloadavg()[0]:.1f}")


def measure(uri: str, work: Path, repeats: int, seeds: int, where: str = ""
            ) -> list[tuple[str, float, float, float, str]]:
    """Row i against the server at ``uri`` (``where``: said after each row's first label, and
    names its experiments apart): the warm-ups, then ``repeats`` rounds of the three processes in
    rotating order."""
    grid = [*SUITE, *GRID, "--seeds", str(seeds), "--tracking-uri", uri]
    name = {k: f"{k}{where}" for k in ("warm", "plain", "suite", "async")}
    run([*grid, "--experiment", name["warm"]], work)
    runs = work / "runs.json"
    n = dump_runs(uri, name["warm"], runs)
    cmds = {
        "plain": ([PY, __file__, "--replay", str(runs), uri, name["plain"]], ENV),
        "suite": ([*grid, "--experiment", name["suite"]], {**ENV, "SUITE_TRACKING_ASYNC": "0"}),
        "async": ([*grid, "--experiment", name["async"]], {**ENV, "SUITE_TRACKING_ASYNC": "1"}),
    }
    for cmd, env in cmds.values():  # warm-ups (the server's first writes to each experiment)
        run(cmd, work, env)
    times: dict[str, list[float]] = {k: [] for k in [*cmds, "suite tracking", "async tracking"]}
    names = list(cmds)
    for i in range(repeats):
        for k in names[i % 3:] + names[: i % 3]:
            cmd, env = cmds[k]
            wall, out = run(cmd, work, env)
            times[k].append(wall / n)
            if k != "plain":
                times[f"{k} tracking"].append(phase_seconds(time_line(out)).get("tracking", float("nan")) / n)
    med = {k: statistics.median(v) for k, v in times.items()}

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    print(f"i: {n} runs a process; every time per run (s): "
          + "; ".join(f"{k} {', '.join(f'{t:.3f}' for t in v)}" for k, v in times.items()))
    return [(f"{n} runs{where}: plain MLflow, sync / suite", med["plain"], med["suite"], ratio("plain", "suite"),
             ">= 1x"),
            ("  plain's process / suite's tracking phase", med["plain"], med["suite tracking"],
             ratio("plain", "suite tracking"), ">= 1x"),
            (f"{n} runs{where}: suite / suite async", med["suite"], med["async"], ratio("suite", "async"), "> 1x"),
            ("  tracking phase only", med["suite tracking"], med["async tracking"],
             ratio("suite tracking", "async tracking"), "> 1x")]


if __name__ == "__main__":
    main()
