"""A backlog drained through a broker that keeps a strict in-flight window.

    .venv/bin/python -P bench/inflight.py [--messages 5000] [--windows 32,20] [--runs 2]

Most brokers send a session at most a few dozen unacknowledged QoS 1 messages (EMQX's
`mqtt.max_inflight` 32, VerneMQ's and Mosquitto's `max_inflight_messages` 20 by default), and
the pipeline acknowledges a batch only once it is stored. In one invocation, on Mosquitto and
InfluxDB started here on loopback, with the strict window enforced by
simulators/inflightproxy.py in front of Mosquitto (Debian's Mosquitto 2.0.11 keeps to its own
window only until the first acknowledgements), for each window and run: a persistent session
is created, `--messages` readings of the sample district (one per message) are queued for it,
then ews.pipeline.Pipeline (sample rules on) connects through the proxy and drains them. It
is timed from its connect to its last reading stored and evaluated, and the readings are
counted back in InfluxDB. Three pipelines drain the same backlog:

- **window-aware**: as shipped, batches close when the window is full (ingest/window.py);
- **lingering** (the baseline): the same pipeline with that switched off, so every batch waits
  `influxdb.flush_interval_s` (50 ms) for messages the broker will not send;
- **no window**: the shipped pipeline on Mosquitto directly (window 20,000, deploy/mosquitto),
  the rate the broker's setting costs.

Prints the rates and their ratios, and writes .state/bench/inflight.png.
(-P keeps bench/ off the import path: bench/ingest.py would shadow the `ingest` package.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # as -P does
sys.path.insert(0, str(_HERE.parent))  # the repository: the sibling scripts import as `bench.<name>`

import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.ingest_roles import pipeline_config  # noqa: E402
from ews.config import RegistryConfig  # noqa: E402
from ews.pipeline import Pipeline  # noqa: E402
from ews.sensors import SensorRegistry  # noqa: E402
from ews.servers import influxdb, mosquitto  # noqa: E402
from ingest.window import InflightWindow  # noqa: E402
from simulators.inflightproxy import InflightProxy  # noqa: E402

console = Console(width=140)
AWARE, LINGERING, DIRECT = "window-aware", "lingering", "no window"




class NoWindow(InflightWindow):
    """The baseline: never knows a window, so every batch lingers its full time."""

    def full(self, unacked: int) -> bool:
        return False

    def stalled(self, unacked: int) -> int | None:
        return None


def drain(pipeline_port: int, broker_port: int, influx_url: str, state: Path, sensors: SensorRegistry,
          n: int, how: str, tag: str, bi: Any, progress: Any) -> dict[str, Any]:
    msgs, _ = bi.stream(sensors, n, 1)
    cid, db = f"inflight-{tag}", f"inflight_{tag}"
    bi.make_session(broker_port, cid, False)
    bi.publish_all(broker_port, msgs, f"inflight-pub-{tag}", progress=lambda k: None)
    p = Pipeline(pipeline_config(pipeline_port, cid, influx_url, db, state / cid, drill_root=None))
    col = p.collector
    if how == LINGERING:
        col._window = NoWindow()
    task = progress.add_task(f"{how}: draining {n:,} queued readings", total=n)
    t0 = time.perf_counter()
    p.start()
    deadline = time.monotonic() + 600
    while (col.stats["messages"] < n or col.pending) and time.monotonic() < deadline:
        progress.update(task, completed=col.stats["messages"])
        time.sleep(0.01)
    seconds = time.perf_counter() - t0
    progress.remove_task(task)
    batches = col.stats["batches"]
    p.stop()
    bi.discard_session(broker_port, cid, False)
    stored = bi.influx_count(influx_url, db)
    return {"how": how, "msg_s": n / seconds, "lost": n - stored, "batches": batches}


def plot(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = sorted({r["window"] for r in results if r["how"] != DIRECT}, reverse=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    hows = [(AWARE, "#d62728"), (LINGERING, "#7f7f7f")]
    for k, (how, color) in enumerate(hows):
        med = [statistics.median(r["msg_s"] for r in results if r["how"] == how and r["window"] == w)
               for w in windows]
        ax.bar([i + 0.38 * k for i in range(len(windows))], med, width=0.38, color=color, label=how)
    direct = statistics.median(r["msg_s"] for r in results if r["how"] == DIRECT)
    ax.axhline(direct, color="#1f77b4", linestyle="--", label=f"{DIRECT} ({direct:,.0f}/s)")
    ax.set_xticks([i + 0.19 for i in range(len(windows))], [f"window {w}" for w in windows])
    ax.set_yscale("log")
    ax.set_ylabel("messages / s draining a backlog (median)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000, help="readings queued, one per message")
    ap.add_argument("--windows", default="32,20", help="strict in-flight windows, comma separated")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(".state/bench/inflight.png"))
    a = ap.parse_args()
    from bench import ingest as bi  # the same stream of the sample district, its queueing helpers
    sensors = RegistryConfig.sample().load().sensors
    windows = [int(w) for w in a.windows.split(",")]
    state = Path(tempfile.mkdtemp(prefix="ews-bench-inflight-"))
    mq, db = mosquitto(state), influxdb(state)
    load = os.getloadavg()
    results: list[dict[str, Any]] = []
    try:
        mq.start()
        db.start()
        with Progress(console=console, transient=True) as progress:
            for rep in range(a.runs):
                r = drain(mq.port, mq.port, db.url, state, sensors, a.messages, DIRECT, f"d{rep}", bi, progress)
                results.append({**r, "window": 0, "rep": rep})
                for w in windows:
                    for how in (AWARE, LINGERING):
                        proxy = InflightProxy(mq.port, w)
                        try:
                            tag = f"w{w}_{how[0]}{rep}"
                            r = drain(proxy.port, mq.port, db.url, state, sensors, a.messages, how, tag, bi, progress)
                        finally:
                            proxy.stop()
                        results.append({**r, "window": w, "rep": rep})
                        console.print(f"  run {rep + 1}, window {w}, {how}: {r['msg_s']:,.0f} msg/s, "
                                      f"{r['batches']} batches, lost {r['lost']}")
    finally:
        mq.stop()
        db.stop()
        shutil.rmtree(state, ignore_errors=True)
    t = Table(title=f"draining {a.messages:,} queued QoS 1 readings, {a.runs} runs "
                    f"(load average before: {load[0]:.1f} {load[1]:.1f})")
    for c in ("broker window", "pipeline", "msg/s median", "range", "batches", "lost (all runs)"):
        t.add_column(c, justify="right")
    for w in [0, *windows]:
        for how in ([DIRECT] if w == 0 else [AWARE, LINGERING]):
            rs = [r for r in results if r["window"] == w and r["how"] == how]
            rates = [r["msg_s"] for r in rs]
            t.add_row("20,000 (deploy/)" if w == 0 else str(w), how, f"{statistics.median(rates):,.0f}",
                      f"{min(rates):,.0f} - {max(rates):,.0f}", str(rs[0]["batches"]), str(sum(r["lost"] for r in rs)))
    console.print(t)
    direct = statistics.median(r["msg_s"] for r in results if r["how"] == DIRECT)
    for w in windows:
        aware = [r["msg_s"] for r in results if r["window"] == w and r["how"] == AWARE]
        linger = [r["msg_s"] for r in results if r["window"] == w and r["how"] == LINGERING]
        each = ", ".join(f"{x / y:.1f}x" for x, y in zip(aware, linger, strict=True))
        console.print(f"window {w}: window-aware {statistics.median(aware) / statistics.median(linger):.1f}x the "
                      f"lingering baseline (per run: {each}); {statistics.median(aware) / direct:.0%} of the "
                      f"rate with the shipped window")
    console.print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    plot(results, a.out)
    console.print(f"plot: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
