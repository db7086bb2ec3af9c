"""What InfluxDB spends on the pipeline's own write requests, replayed, against the raw baseline's.

    .venv/bin/python -P bench/ingest_replay.py [--rounds 6] [--messages 200000] [--split]

bench/ingest.py finds InfluxDB spending more CPU a point on the pipeline's writes than on its
raw baseline's in most invocations, most often with InfluxDB on a core of its own. This
script tells apart what is sent from how it is sent. Each round, on Mosquitto and InfluxDB
started here on loopback:

1. the 100-readings-a-message stream of bench/ingest.py is queued for a pipeline session and
   the pipeline (rules on, its own process) drains it while every write request it makes is
   recorded as sent: its body and the moment it started ("live");
2. then, each into a fresh database, in an order that alternates from round to round:
   - "raw": bench/ingest.py's baseline (the same readings as line protocol in event-time
     order, 5,000 lines a request, two writers);
   - "replayed": the pipeline's request bodies back to back, four at a time (as many as the
     pipeline keeps in flight);
   - "replayed on time": each body sent at the moment, from the pipeline's first request, at
     which the pipeline sent it, so InfluxDB sees the same gaps;
   - "replayed beside a neighbour": back to back while another process sorts and shuffles a
     32 MB array on the CPU the clients use.

Prints InfluxDB's CPU a point and points/s for each (the live run's over the span from its
first request's start to its last one's return), each as a median over the rounds and as a
ratio to raw's, and InfluxDB's CPU a point over the pipeline's whole process as
bench/ingest.py counts it; writes .state/bench/ingest_replay.png. `--split` places the servers
as bench/ingest.py's `--split` does: InfluxDB on a core of its own.

(-P keeps bench/ off the import path: bench/ingest.py would shadow the `ingest` package.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # as -P does
sys.path.insert(0, str(_HERE.parent))  # the repository: the sibling scripts import as `bench.<name>`


def capture_role(argv: list[str]) -> None:
    """Run bench/ingest_roles.py's pipeline role with every write request recorded; the
    requests, and InfluxDB's CPU time (process `argv[1]`) at the first request's start and the
    last one's return, go to the file named by `argv[0]` when the process exits."""
    out, influx_pid, rest = argv[0], int(argv[1]), argv[2:]
    import atexit
    import os
    import pickle
    import threading
    import time

    from ingest.influx_v1 import InfluxV1

    sent: list[tuple[float, float, bytes]] = []
    influx_cpu: list[float] = []  # at the first request's start, then at the latest return
    latest = [0.0]  # the latest return so far
    lock = threading.Lock()
    post = InfluxV1._post
    tick = os.sysconf("SC_CLK_TCK")

    def cpu_of_influx() -> float:
        with open(f"/proc/{influx_pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    def recording_post(self: InfluxV1, conn: Any, lines: bytes) -> tuple[int, str]:
        with lock:
            if not influx_cpu:
                influx_cpu.append(cpu_of_influx())
        t0 = time.time()
        answer = post(self, conn, lines)
        t1 = time.time()
        with lock:
            sent.append((t0, t1, bytes(lines)))
            if t1 >= latest[0]:
                latest[0] = t1
                influx_cpu[1:] = [cpu_of_influx()]
        return answer

    InfluxV1._post = recording_post  # type: ignore[method-assign]

    def dump() -> None:
        with open(out, "wb") as f:
            pickle.dump((sent, influx_cpu[-1] - influx_cpu[0] if influx_cpu else 0.0), f)

    atexit.register(dump)
    from bench import ingest_roles as roles

    sys.argv = [str(_HERE / "ingest_roles.py"), *rest]
    roles.main()


if __name__ == "__main__" and sys.argv[1:2] == ["--capture-role"]:
    # the pipeline's process: nothing of this script's own imports in its heap
    capture_role(sys.argv[2:])
    sys.exit(0)


import os  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from bench import ingest as bench  # noqa: E402
from ews import affinity  # noqa: E402
from ews.config import RegistryConfig  # noqa: E402
from ews.servers import influxdb, mosquitto  # noqa: E402

console = Console(width=160)
KINDS = ("live", "raw", "replayed", "replayed on time", "replayed beside a neighbour")
NEIGHBOUR = """
import time
import numpy as np
a = np.random.default_rng(1).random(4_000_000)  # 32 MB, beyond what the caches hold
until = time.monotonic() + 120
while time.monotonic() < until:
    np.random.shuffle(a)
    a.sort()
"""
Request = tuple[float, float, bytes]  # start (epoch s), return, body


class Replayer:
    def __init__(self, url: str, influx_pid: int):
        self.url, self.pid = url, influx_pid

    def measure(self, db: str, send: Callable[[httpx.Client, str], None], points: int,
                neighbour_on: set[int] | None = None) -> tuple[float, float]:
        """(points/s, InfluxDB's CPU µs a point) for `send` writing `points` into a fresh `db`,
        with the memory-heavy neighbour running on `neighbour_on` throughout when given."""
        httpx.post(f"{self.url}/query", data={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()
        hog = None
        if neighbour_on:
            hog = subprocess.Popen([sys.executable, "-c", NEIGHBOUR],
                                   preexec_fn=lambda: os.sched_setaffinity(0, neighbour_on))
        try:
            with httpx.Client(base_url=self.url, timeout=60) as client:
                bench.settle(self.pid)  # also gives the neighbour time to make its array
                c0, t0 = bench.cpu_of(self.pid), time.perf_counter()
                send(client, db)
                elapsed, cpu = time.perf_counter() - t0, bench.cpu_of(self.pid) - c0
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        return points / elapsed, cpu / points * 1e6


def post(client: httpx.Client, db: str, body: bytes) -> None:
    client.post("/write", params={"db": db, "precision": "ms"}, content=body).raise_for_status()


def back_to_back(bodies: list[bytes], writers: int) -> Callable[[httpx.Client, str], None]:
    def send(client: httpx.Client, db: str) -> None:
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(lambda b: post(client, db, b), bodies))
    return send


def on_time(requests: list[Request]) -> Callable[[httpx.Client, str], None]:
    first = requests[0][0]

    def send(client: httpx.Client, db: str) -> None:
        start = time.perf_counter()

        def one(at: float, body: bytes) -> None:
            time.sleep(max(0.0, at - (time.perf_counter() - start)))
            post(client, db, body)

        threads = [threading.Thread(target=one, args=(t0 - first, body)) for t0, _, body in requests]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return send


def live_run(n: int, port: int, url: str, influx_pid: int, state: Path, tag: str,
             msgs: list[tuple[str, bytes]]) -> tuple[tuple[float, float], float, list[Request]]:
    """The pipeline draining the queued stream: ((points/s over its writes, InfluxDB's CPU µs a
    point over them), InfluxDB's CPU µs a point over the pipeline's whole process, the requests
    it sent)."""
    cid = f"bench-replay-{tag}"
    bench.make_session(port, cid, False)
    bench.publish_all(port, msgs, f"bench-replay-pub-{tag}", progress=lambda _k: None)
    bench.settle(influx_pid)
    out = state / f"requests-{tag}.pickle"
    argv = [sys.executable, "-P", str(Path(__file__).resolve()), "--capture-role", str(out), str(influx_pid),
            "pipeline", "--port", str(port), "--client-id", cid, "--messages", str(len(msgs)), "--influx", url,
            "--db", f"bench_replay_live_{tag}", "--state", str(state / cid)]
    c0 = bench.cpu_of(influx_pid)
    done = subprocess.run(argv, capture_output=True, timeout=900)
    cpu = bench.cpu_of(influx_pid) - c0
    bench.discard_session(port, cid, False)
    if done.returncode or not out.exists():
        raise RuntimeError(f"the pipeline's run failed:\n{done.stderr.decode(errors='replace')[-3000:]}")
    with open(out, "rb") as f:
        sent, writes_cpu = pickle.load(f)
    requests: list[Request] = sorted(sent)
    points = sum(body.count(b"\n") for _, _, body in requests)
    if points != n:
        raise RuntimeError(f"the pipeline wrote {points:,} lines of the {n:,} readings sent")
    span = max(r[1] for r in requests) - requests[0][0]
    return (points / span, writes_cpu / points * 1e6), cpu / points * 1e6, requests


def plot(res: dict[str, list[tuple[float, float]]], out: Path, placement: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, i, label in ((axes[0], 1, "InfluxDB CPU µs a point"), (axes[1], 0, "points / s")):
        vals = [[r[i] for r in res[k]] for k in KINDS]
        mid = [statistics.median(v) for v in vals]
        err = [[m - min(v) for m, v in zip(mid, vals, strict=True)],
               [max(v) - m for m, v in zip(mid, vals, strict=True)]]
        colors = ["#d62728", "#7f7f7f", "#1f77b4", "#17becf", "#ff7f0e"]
        ax.bar(KINDS, mid, yerr=err, capsize=3, color=colors)
        ax.set_ylabel(label)
        ax.set_title(f"{label} (median, range)")
        ax.tick_params(axis="x", rotation=25)
    fig.suptitle(placement, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--messages", type=int, default=200_000, help="readings in the stream")
    ap.add_argument("--split", action="store_true", help="InfluxDB on one CPU, everything else on the others")
    ap.add_argument("--out", type=Path, default=Path(".state/bench/ingest_replay.png"))
    a = ap.parse_args()
    may = affinity.allowed()
    if len(may) < 2:
        ap.error(f"needs two CPUs or more (the neighbour and InfluxDB apart); this process may run on {sorted(may)}")
    sensors = RegistryConfig.sample().load().sensors
    state = Path(tempfile.mkdtemp(prefix="ews-bench-replay-"))
    mq, db = mosquitto(state), influxdb(state)
    load = os.getloadavg()
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    live_whole: list[float] = []  # InfluxDB's CPU a point over the pipeline's whole process
    placement = "every process placed by the scheduler"
    try:
        if a.split:
            placement = bench.start_split(may, db, mq)
        else:
            mq.start()
            db.start()
        assert db.proc is not None
        # the neighbour runs where the clients do: beside InfluxDB, not on its core when it has one
        clients = set(sorted(may)[1:])
        replayer = Replayer(db.url, db.proc.pid)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("rounds", total=a.rounds * len(KINDS))
            for rnd in range(a.rounds):
                msgs, lines = bench.stream(sensors, a.messages, 100)
                tag = f"r{rnd}_{int(time.time())}"
                live, whole, requests = live_run(a.messages, mq.port, db.url, db.proc.pid, state, tag, msgs)
                res["live"].append(live)
                live_whole.append(whole)
                progress.advance(task)
                bodies = [body for _, _, body in requests]
                sends = {"raw": back_to_back(bench.raw_requests(lines), 2), "replayed": back_to_back(bodies, 4),
                         "replayed on time": on_time(requests),
                         "replayed beside a neighbour": back_to_back(bodies, 4)}
                order = list(sends) if rnd % 2 == 0 else list(sends)[::-1]
                for kind in order:
                    name = f"bench_replay_{kind.replace(' ', '_')}_{tag}"
                    beside = clients if kind == "replayed beside a neighbour" else None
                    res[kind].append(replayer.measure(name, sends[kind], a.messages, beside))
                    progress.advance(task)
                console.print(f"  round {rnd + 1}: " + ", ".join(
                    f"{k} {res[k][-1][1]:.2f} µs/point" for k in KINDS))
    finally:
        mq.stop()
        db.stop()
        shutil.rmtree(state, ignore_errors=True)
    t = Table(title=f"InfluxDB on the pipeline's write requests, {a.messages:,} readings at 100 a message, "
                    f"{a.rounds} rounds, {placement} (load average before: {load[0]:.1f} {load[1]:.1f})")
    for col in ("requests", "InfluxDB CPU µs/point median", "range", "ratio to raw (median of rounds)",
                "points/s median", "range"):
        t.add_column(col, justify="right")
    for k in KINDS:
        cpu = [r[1] for r in res[k]]
        rate = [r[0] for r in res[k]]
        ratio = statistics.median(r[1] / raw[1] for r, raw in zip(res[k], res["raw"], strict=True))
        t.add_row(k, f"{statistics.median(cpu):.2f}", f"{min(cpu):.2f}-{max(cpu):.2f}", f"{ratio:.2f}",
                  f"{statistics.median(rate):,.0f}", f"{min(rate):,.0f}-{max(rate):,.0f}")
    console.print(t)
    console.print(f"live, InfluxDB's CPU µs a point over the pipeline's whole process: median "
                  f"{statistics.median(live_whole):.2f} ({min(live_whole):.2f}-{max(live_whole):.2f})")
    load = os.getloadavg()
    console.print(f"load average after: {load[0]:.1f}")
    plot(res, a.out, placement)
    console.print(f"plot: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
