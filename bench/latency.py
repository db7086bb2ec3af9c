"""Latency from a reading published over MQTT to its warning accepted by a webhook receiver,
idle and under 10,000 readings/s of background load.

Everything runs on this machine: Mosquitto and InfluxDB (ews/servers.py), the pipeline as
`ews run` in its own process, background publisher processes (simulators/loadfleet.py, one
lean QoS 1 connection each) sending quiet readings of N generated sensors, and, in this
process, a probe publisher and the signed-webhook receiver. A probe is a gas reading that
opens (31 % LEL, orange) or lifts (0 % LEL) a warning on one of the probe detectors; its
latency runs from just before the publish to the receiver accepting the notification. The
same probes are measured first with no background load (the baseline in the same run), so
the loaded figures also read as a ratio.

    .venv/bin/python bench/latency.py                 # 10,000 readings/s for 30 s
    .venv/bin/python bench/latency.py --rate 5000 --seconds 60 --png latency.png

Grouping is off (a grouping window delays staff messages by design); the ingest linger
(`influxdb.flush_interval_s`) is a knob of this benchmark since it bounds the latency from
below.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ews.servers import local_servers  # noqa: E402
from ingest.influx_v1 import InfluxV1  # noqa: E402
from simulators.loadfleet import Broker, Fleet, generate_district  # noqa: E402

SECRET = "bench-latency-secret"
console = Console()


class Receiver:
    """Signed-webhook receiver that timestamps each notification of a pending probe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[tuple[str, str], float] = {}  # (subject, transition) -> publish time
        self.latencies: list[float] = []
        self.committed: list[float] = []  # publish -> transition committed (ingest, store, rules)
        self.arrived = threading.Condition(self.lock)
        self.bad = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                now = time.time()
                ts = self.headers.get("X-EWS-Timestamp", "")
                want = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
                ok = hmac.compare_digest(want, self.headers.get("X-EWS-Signature", ""))
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                doc = orjson.loads(body) if ok else {}
                key = (doc.get("warning", {}).get("subject", ""), doc.get("transition", ""))
                with outer.lock:
                    outer.bad += int(not ok)
                    t0 = outer.pending.pop(key, None)
                    if t0 is not None:
                        outer.latencies.append(now - t0)
                        outer.committed.append(doc["warning"]["updated_ts_ms"] / 1000 - t0)
                        outer.arrived.notify_all()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/ews"


class Prober:
    """Publishes probe readings at a steady rate, alternating open and lift per detector."""

    def __init__(self, port: int, topics: list[bytes], ids: list[str], rx: Receiver):
        self.topics, self.ids, self.rx = topics, ids, rx
        self.open = [False] * len(ids)
        self.next = 0
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-latency-probe-{os.getpid()}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def probe(self) -> None:
        k = self.next % len(self.ids)
        self.next += 1
        transition = "resolve" if self.open[k] else "open"
        value = 0.0 if self.open[k] else 31.0
        self.open[k] = not self.open[k]
        t0 = time.time()
        with self.rx.lock:
            self.rx.pending[(self.ids[k], transition)] = t0
        payload = orjson.dumps({"ts": int(t0 * 1000), "value": value})
        self.client.publish(self.topics[k].decode(), payload, qos=1)

    def run(self, n: int, per_s: float, progress: Progress | None = None, task: Any = None) -> None:
        start = time.monotonic()
        for i in range(n):
            while time.monotonic() < start + i / per_s:
                time.sleep(0.002)
            self.probe()
            if progress is not None:
                progress.advance(task)

    def settle(self, timeout_s: float) -> int:
        """Wait for outstanding probes; returns how many never arrived."""
        deadline = time.monotonic() + timeout_s
        with self.rx.lock:
            while self.rx.pending and time.monotonic() < deadline:
                self.rx.arrived.wait(0.2)
            lost = len(self.rx.pending)
            self.rx.pending.clear()
        return lost

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _stats(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat) * 1000
    return {"n": float(a.size), **{f"p{q}": float(np.percentile(a, q)) for q in (50, 95, 99)},
            "max": float(a.max())}


def _config(folder: Path, mqtt_port: int, influx_url: str, regions: Path, sensors: Path, hook: str,
            linger_s: float) -> Path:
    cfg = {
        "mqtt": {"port": mqtt_port, "client_id": f"bench-latency-{os.getpid()}", "subscriptions": ["ews/440106/#"]},
        "influxdb": {"url": influx_url, "database": f"bench_latency_{os.getpid()}", "flush_interval_s": linger_s},
        "registries": {"regions": str(regions), "sensors": str(sensors)},
        "state_dir": str(folder / "state"),
        "notifiers": {"channels": [{"name": "webhook", "type": "webhook", "url": hook,
                                    "secret_env": "EWS_BENCH_SECRET"}]},
    }
    p = folder / "config.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


def _webhook_contacts(regions: Path) -> None:
    """The generated district's duty desk is reached on the webhook."""
    doc = yaml.safe_load(regions.read_text(encoding="utf-8"))

    def fix(node: dict[str, Any]) -> None:
        for c in node.get("contacts", []):
            c["channels"] = ["webhook"]
        for child in node.get("streets", []) + node.get("communities", []):
            fix(child)

    for d in doc["districts"]:
        fix(d)
    regions.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10_000.0, help="background readings per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the loaded phase")
    ap.add_argument("--sensors", type=int, default=10_000, help="generated background sensors")
    ap.add_argument("--publishers", type=int, default=2, help="background publisher processes")
    ap.add_argument("--probes-per-s", type=float, default=5.0)
    ap.add_argument("--idle-probes", type=int, default=60)
    ap.add_argument("--linger", type=float, default=0.05, help="influxdb.flush_interval_s of the pipeline")
    ap.add_argument("--png", type=Path, default=None, help="write the latency distributions here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ews-bench-latency-") as tmp:
        folder = Path(tmp)
        probes = 40
        regions, sensors, load = generate_district(args.sensors, probes, folder / "registry")
        _webhook_contacts(regions)
        rx = Receiver()
        with local_servers(folder / "servers") as srv:
            cfg = _config(folder, srv.mqtt.port, srv.influx_url, regions, sensors, rx.url, args.linger)
            log = (folder / "pipeline.log").open("wb")
            env = dict(os.environ, EWS_BENCH_SECRET=SECRET)
            proc = subprocess.Popen([sys.executable, "-m", "ews.cli", "run", "--config", str(cfg)], cwd=REPO,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            fleet = Fleet(Broker("127.0.0.1", srv.mqtt.port), load, args.publishers)
            prober: Prober | None = None
            try:
                deadline = time.monotonic() + 120
                while b"MQTT subscribed" not in (folder / "pipeline.log").read_bytes():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the pipeline did not start:\n"
                                         + (folder / "pipeline.log").read_text(errors="replace")[-3000:])
                    time.sleep(0.1)
                prober = Prober(srv.mqtt.port, load.probe_topics, load.probe_ids, rx)
                fleet.start()
                n_loaded = int(args.seconds * args.probes_per_s)
                columns = (TextColumn("{task.description}"), BarColumn(),
                           TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn())
                with Progress(*columns, console=console) as progress:
                    # warm-up: the first probes pay for connections and imports
                    prober.run(10, args.probes_per_s)
                    prober.settle(10)
                    rx.latencies.clear()
                    rx.committed.clear()
                    t = progress.add_task("baseline probes, no background load", total=args.idle_probes)
                    load_before = os.getloadavg()[0]
                    prober.run(args.idle_probes, args.probes_per_s, progress, t)
                    lost_idle = prober.settle(10)
                    idle, idle_c = list(rx.latencies), list(rx.committed)
                    rx.latencies.clear()
                    rx.committed.clear()

                    t = progress.add_task(f"probes under {args.rate:,.0f} readings/s", total=n_loaded)
                    _, acked0 = fleet.totals()
                    start_at = time.time() + 1.0
                    fleet.begin(args.rate, args.seconds, start_at)
                    while time.time() < start_at + 2.0:  # let the load reach its rate first
                        time.sleep(0.05)
                    load_during = []
                    sampler_stop = threading.Event()

                    def sample() -> None:
                        while not sampler_stop.wait(1.0):
                            load_during.append(os.getloadavg()[0])

                    threading.Thread(target=sample, daemon=True).start()
                    prober.run(min(n_loaded, int((args.seconds - 3) * args.probes_per_s)), args.probes_per_s,
                               progress, t)
                    sampler_stop.set()
                    fleet_ok = fleet.wait_done(args.seconds + 120)
                    published_s = time.time() - start_at
                    lost_loaded = prober.settle(30)
                    loaded, loaded_c = list(rx.latencies), list(rx.committed)
                _, acked1 = fleet.totals()
                acked = acked1 - acked0
                db = InfluxV1(srv.influx_url, f"bench_latency_{os.getpid()}")
                stored = 0
                drain_deadline = time.monotonic() + 60
                while time.monotonic() < drain_deadline:
                    stored = sum(db.count(k) for k in ("rain", "water_level", "ponding", "gas", "smoke"))
                    if stored >= acked:
                        break
                    time.sleep(1.0)
                db.close()
            finally:
                if prober is not None:
                    prober.close()
                fleet.stop()
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.close()

    if not idle or not loaded:
        console.print("[red]no probe arrived; see the pipeline log[/]")
        return 1
    si, sl = _stats(idle), _stats(loaded)
    table = Table(title="publish → webhook accepted, ms", title_justify="left")
    for c in ("phase", "background rate (acked)", "probes", "lost", "p50", "p95", "p99", "max"):
        table.add_column(c, justify="left" if c == "phase" else "right")
    table.add_row("idle (baseline)", "0", f"{si['n']:.0f}", str(lost_idle),
                  *(f"{si[k]:.1f}" for k in ("p50", "p95", "p99", "max")))
    table.add_row("loaded", f"{acked / max(published_s, 1e-9):,.0f}/s", f"{sl['n']:.0f}", str(lost_loaded),
                  *(f"{sl[k]:.1f}" for k in ("p50", "p95", "p99", "max")))
    table.add_row("loaded / idle", "", "", "", *(f"{sl[k] / si[k]:.2f}×" for k in ("p50", "p95", "p99", "max")))
    console.print(table)
    split = Table(title="where the time goes (p50 / p99, ms)", title_justify="left")
    for c in ("phase", "publish → committed (ingest, InfluxDB, rules, lifecycle)",
              "committed → accepted (outbox, HTTP)"):
        split.add_column(c, justify="left" if c == "phase" else "right")
    for name, total, comm in (("idle", idle, idle_c), ("loaded", loaded, loaded_c)):
        a, b = np.asarray(comm) * 1000, (np.asarray(total) - np.asarray(comm)) * 1000
        split.add_row(name, f"{np.percentile(a, 50):.1f} / {np.percentile(a, 99):.1f}",
                      f"{np.percentile(b, 50):.1f} / {np.percentile(b, 99):.1f}")
    console.print(split)
    console.print(
        f"background: {acked:,} readings acknowledged by the broker in {published_s:.1f} s "
        f"({acked / max(published_s, 1e-9):,.0f}/s asked {args.rate:,.0f}/s, {args.publishers} publisher processes"
        f"{'' if fleet_ok else ', publishers did not finish'}), {stored:,} stored in InfluxDB; "
        f"ingest linger {args.linger * 1000:.0f} ms; load average {load_before:.2f} before, "
        f"{(max(load_during) if load_during else 0):.2f} peak during; {os.cpu_count()} CPUs"
    )
    verdict = "[green]meets[/]" if sl["p99"] < 250 else "[red]misses[/]"
    console.print(f"p99 under load {sl['p99']:.0f} ms {verdict} the 250 ms target")
    if args.png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for name, lat in (("idle", idle), (f"{acked / max(published_s, 1e-9):,.0f} readings/s", loaded)):
            a = np.sort(np.asarray(lat) * 1000)
            ax.plot(a, np.arange(1, a.size + 1) / a.size, label=name)
        ax.axvline(250, color="k", ls="--", lw=1, label="target p99 250 ms")
        ax.set_xscale("log")
        ax.set_xlabel("publish → webhook accepted, ms (log scale)")
        ax.set_ylabel("share of probes")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)
        console.print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
