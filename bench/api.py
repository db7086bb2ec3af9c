"""HTTP API throughput and live-event fan-out, as ratios to baselines run in the same script.

    .venv/bin/python -P bench/api.py [--warnings 300] [--seconds 3] [--streams 20]

(-P: bench/detectors.py would otherwise shadow the detectors package.)

Opens `--warnings` warnings in the sample district (readings fed straight into a pipeline
that is not connected to a broker), serves the API on a free loopback port, and measures
requests per second of the duty dashboard's calls against `/healthz` (the framework's floor
on this machine). Then `--streams` event streams listen while transitions are published,
and the time from publish to the last stream receiving each event is reported, against one
stream. InfluxDB is not needed: the endpoints measured read SQLite and memory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from ews.api.app import create_app
from ews.api.auth import TokenStore, token_hash
from ews.api.context import ApiContext
from ews.api.server import ApiServer
from ews.config import ApiConfig, Config, InfluxConfig, MqttConfig, RegistryConfig
from ews.models import ReadingBatch
from ews.pipeline import Pipeline

TOKEN = "bench-admin"


def rate(url: str, path: str, seconds: float, clients: int = 4) -> float:
    """Requests per second with `clients` keep-alive connections."""
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def run(i: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as c:
            while time.monotonic() < stop:
                assert c.get(path).status_code == 200
                counts[i] += 1

    t0 = time.monotonic()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(run, range(clients)))
    return sum(counts) / (time.monotonic() - t0)


def fan_out(url: str, app_state: object, streams: int, events: int) -> list[float]:
    """Seconds from publishing an event to the last of `streams` listeners receiving it."""
    hub = app_state.hub  # type: ignore[attr-defined]
    seen: list[dict[int, float]] = [{} for _ in range(streams)]
    ready = threading.Barrier(streams + 1)

    def listen(i: int) -> None:
        with httpx.stream("GET", f"{url}/api/v1/events", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=30) as r:
            ready.wait()
            for line in r.iter_lines():
                if line.startswith("data:") and '"n":' in line:
                    n = int(line.split('"n":')[1].split("}")[0])
                    seen[i][n] = time.perf_counter()
                    if n == events - 1:
                        return

    threads = [threading.Thread(target=listen, args=(i,), daemon=True) for i in range(streams)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.2)
    sent: dict[int, float] = {}
    for n in range(events):
        sent[n] = time.perf_counter()
        hub.publish("bench", {"n": n}, "440106001001")
        time.sleep(0.002)
    for t in threads:
        t.join(30)
    return [max(s[n] for s in seen) - sent[n] for n in range(events) if all(n in s for s in seen)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warnings", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--events", type=int, default=200)
    args = ap.parse_args()
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="ews-bench-api-"))
    tokens = tmp / "tokens.yaml"
    tokens.write_text(f"tokens:\n  - {{name: bench, role: admin, region: '*', sha256: {token_hash(TOKEN)}}}\n")
    cfg = Config(mqtt=MqttConfig(port=1), influxdb=InfluxConfig(url="http://127.0.0.1:9"),
                 registries=RegistryConfig.sample(),
                 state_dir=tmp / "state", api=ApiConfig(port=0, tokens=tokens))
    p = Pipeline(cfg)
    gas = [s for s in p.sensors.sensors if s.kind in ("gas", "ponding")]
    t0 = int(time.time() * 1000) - 3_600_000
    with console.status("opening warnings"):
        for i in range(args.warnings):
            s = gas[i % len(gas)]
            value = 31.0 + (i // len(gas)) * 5 if s.kind == "gas" else 20.0 + i // len(gas)
            p.on_readings(ReadingBatch.of([p.sensors.index[s.id]], [t0 + i * 1000], [value]))
    open_n = len(p.warnings.open_warnings())
    assert cfg.api is not None
    app = create_app(ApiContext.from_pipeline(p, cfg.api), TokenStore(tokens, p.regions))
    srv = ApiServer.for_app(app)
    srv.start()
    table = Table(title=f"API on one uvicorn thread, {open_n} open warnings, {len(p.sensors)} sensors")
    table.add_column("request")
    table.add_column("req/s", justify="right")
    table.add_column("vs /healthz", justify="right")
    try:
        with console.status("measuring requests"):
            base = rate(srv.url, "/healthz", args.seconds)
            rows = [(path, rate(srv.url, path, args.seconds)) for path in (
                "/api/v1/me", "/api/v1/warnings?state=open&limit=1000", "/api/v1/regions", "/api/v1/sensors",
                "/api/v1/rules")]
        table.add_row("/healthz (baseline)", f"{base:,.0f}", "1.00")
        for path, r in rows:
            table.add_row(path, f"{r:,.0f}", f"{r / base:.2f}")
        console.print(table)
        with console.status("measuring event fan-out"):
            one = fan_out(srv.url, app.state.ews, 1, args.events)
            many = fan_out(srv.url, app.state.ews, args.streams, args.events)
        q = statistics.quantiles
        console.print(
            f"event fan-out, publish to last receiver: 1 stream p50 {statistics.median(one) * 1000:.1f} ms, "
            f"p99 {q(one, n=100)[98] * 1000:.1f} ms; {args.streams} streams p50 "
            f"{statistics.median(many) * 1000:.1f} ms, p99 {q(many, n=100)[98] * 1000:.1f} ms "
            f"(ratio p50 {statistics.median(many) / statistics.median(one):.1f}×)")
    finally:
        srv.stop()
        p.store.close()


if __name__ == "__main__":
    main()
