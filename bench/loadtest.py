"""The full stepped load test, with a baseline from the same machine and broker.

    .venv/bin/python bench/loadtest.py [--sensors 10000] [--duration 15] [--docs]

Starts its own Mosquitto and InfluxDB (under .state/bench-loadtest), then:

1. baseline: a bare paho-mqtt QoS 1 subscriber that only decodes the JSON and acknowledges
   (the client library's ceiling, as in DESIGN §6) takes a burst of 100,000 readings from the
   lean publisher; its rate is what any Python subscriber on this machine can hope for;
2. `ews loadtest --stepped`: the pipeline (started by the load test on a generated district)
   under rates doubling from --start-rate until a step loses readings or its p99
   publish-to-warning latency passes --max-p99-ms, with one bisection step after that.

Prints the highest sustainable rate, its latency and memory, the ratio to the baseline and
the machine's load average before and after (other work on the machine lowers every figure).
With --docs, copies the plots to docs/img/ when each is under 200 KB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ews.servers import LocalServers, local_servers  # noqa: E402
from simulators.mqttwire import LeanPublisher  # noqa: E402

BURST = 100_000


def baseline(servers: LocalServers) -> float:
    """Readings per second a bare QoS 1 subscriber decodes and acknowledges."""
    got = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        nonlocal got, first, last
        orjson.loads(m.payload)
        if got == 0:
            first = time.perf_counter()
        got += 1
        last = time.perf_counter()
        if got >= BURST:
            done.set()

    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare")
    sub.max_inflight_messages_set(1000)
    sub.on_message = on_message
    sub.connect("127.0.0.1", servers.mqtt.port)
    sub.subscribe("bench/#", qos=1)
    sub.loop_start()
    time.sleep(0.5)
    pub = LeanPublisher("127.0.0.1", servers.mqtt.port, "bench-pub")
    topics = [f"bench/440106/440106001/440106001001/gas/B-{i:05d}".encode() for i in range(1000)]
    for k in range(0, BURST, 1000):
        pub.publish_many([(topics[j % 1000], b'{"ts":%d,"value":1.0}' % (1_700_000_000_000 + k + j))
                          for j in range(1000)])
    pub.wait_acked(60)
    pub.close()
    done.wait(120)
    sub.loop_stop()
    sub.disconnect()
    return got / (last - first) if last > first else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensors", type=int, default=10_000)
    ap.add_argument("--start-rate", type=float, default=1000.0)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--max-p99-ms", type=float, default=1000.0)
    ap.add_argument("--docs", action="store_true", help="copy the plots to docs/img/")
    args = ap.parse_args()
    state = REPO / ".state" / "bench-loadtest"
    if state.exists():
        shutil.rmtree(state)
    load_before = os.getloadavg()
    with local_servers(state / "servers") as srv:
        bare = baseline(srv)
        print(f"baseline: bare paho QoS 1 subscriber, decode + ack: {bare:,.0f} readings/s")
        cfg = state / "base.yaml"
        cfg.write_text(
            f"mqtt: {{host: 127.0.0.1, port: {srv.mqtt.port}}}\n"
            f"influxdb: {{url: '{srv.influx_url}', database: unused}}\n"
            f"registries: {{regions: '{REPO}/ews/sample/regions.yaml', sensors: '{REPO}/ews/sample/sensors.yaml'}}\n"
            "rules_profile: guangdong\n",
            encoding="utf-8",
        )
        out = state / "out"
        proc = subprocess.run(
            [sys.executable, "-m", "ews.cli", "loadtest", "--config", str(cfg), "--sensors", str(args.sensors),
             "--rate", str(args.start_rate), "--duration", str(args.duration), "--stepped",
             "--max-p99-ms", str(args.max_p99_ms), "--out", str(out)],
            cwd=REPO, timeout=3600,
        )
    load_after = os.getloadavg()
    report = json.loads((out / "loadtest.json").read_text(encoding="utf-8"))
    best = report["sustainable_rate"]
    ok = [s for s in report["steps"] if s["verdict"] == "ok"]
    top = max(ok, key=lambda s: s["rate"]) if ok else None
    print()
    print(f"sensors {report['sensors']:,}, publisher processes {report['processes']}, cpus {report['cpus']}")
    for s in report["steps"]:
        print(f"  step {s['rate']:>9,.0f}/s: achieved {s['achieved_rate']:>9,.0f}/s, lost {s['lost']:>6,}, "
              f"p50 {s['p50_ms'] or 0:>7,.0f} ms, p99 {s['p99_ms'] or 0:>7,.0f} ms, "
              f"RSS max {s['rss_max_mb'] or 0:,.0f} MB -> {s['verdict']}")
    if top is not None and best:
        print(f"highest sustainable rate: {best:,.0f} readings/s = {best / bare:.2f} x the bare subscriber "
              f"({bare:,.0f}/s); p50 {top['p50_ms']:,.0f} ms, p95 {top['p95_ms']:,.0f} ms, "
              f"p99 {top['p99_ms']:,.0f} ms; pipeline RSS max {top['rss_max_mb']:,.0f} MB")
    else:
        print("no sustainable rate found")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    if args.docs:
        img = REPO / "docs" / "img"
        img.mkdir(parents=True, exist_ok=True)
        for name in ("loadtest_rate.png", "loadtest_latency.png"):
            src = out / name
            if src.exists() and src.stat().st_size < 200_000:
                shutil.copy(src, img / name)
                print(f"copied {name} to {img}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
