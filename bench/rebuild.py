"""Restart: how long rebuilding the rules' state from InfluxDB takes for N sensors.

Starts its own InfluxDB (ews/servers.py), stores 12 hours of 5-minute rain readings of N
generated gauges, then times `rules.rebuild.rebuild` (InfluxQL per kind in chunks, into the
engine without warnings) for the national rainstorm rule, whose longest window is 12 hours.
The baseline in the same run is the bare chunked InfluxQL read of the same points into numpy,
so the figure also reads as a ratio: what the engine adds on top of reading the history.

    .venv/bin/python bench/rebuild.py               # 10,000 gauges
    .venv/bin/python bench/rebuild.py -n 2000
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this file's folder comes first on sys.path; keep the packages' names free
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

from ews.sensors import Sensor, SensorRegistry  # noqa: E402
from ews.servers import local_servers  # noqa: E402
from ingest.influx_v1 import InfluxV1  # noqa: E402
from rules.engine import RuleEngine  # noqa: E402
from rules.history import influx_history  # noqa: E402
from rules.loader import DEFAULTS_DIR, load_rules  # noqa: E402
from rules.rebuild import rebuild  # noqa: E402

M5 = 300_000
H = 3_600_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000, help="rain gauges")
    ap.add_argument("--hours", type=float, default=12.0, help="history stored")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 120))
    n = args.n
    reg = SensorRegistry([Sensor(id=f"RG-{i:05d}", kind="rain", community=f"440106{1 + i % 21:03d}001",
                                 lat=23.1, lon=113.3) for i in range(n)])
    now = int(time.time() * 1000) // M5 * M5
    ticks = int(args.hours * H / M5)
    rng = np.random.default_rng(3)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, local_servers(Path(tmp)) as srv:
        db = InfluxV1(srv.influx_url, "rebuild", timeout_s=120)
        db.create_database()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("storing history", total=ticks)
            for k in range(ticks):
                t = now - (ticks - k) * M5
                v = np.where(np.arange(n) % 10 == 0, rng.choice([0.5, 1.0, 2.0, 4.0], n), 0.0)
                lines = (f"rain,community={s.community},district={s.district},sensor={s.id},"
                         f"street={s.street} value={float(x)!r} {t}\n" for s, x in zip(reg.sensors, v, strict=True))
                db.write("".join(lines).encode())
                progress.advance(task)
        points = n * ticks
        t0 = time.perf_counter()
        df = influx_history(db, "rain", now - 13 * H, now)
        read_s = time.perf_counter() - t0
        assert len(df) == points, (len(df), points)
        engine = RuleEngine(load_rules(DEFAULTS_DIR / "rainstorm.yaml"), reg)
        t0 = time.perf_counter()
        stats = rebuild(engine, db, now, 26 * H)
        rebuild_s = time.perf_counter() - t0
        db.close()
    # the 12 h window is (t - 12 h, t]: the oldest tick is rightly left out
    assert points - n <= stats.readings <= points, stats
    console.print(
        f"{n:,} gauges x {ticks} readings ({points:,} points, {args.hours:g} h): rebuild {rebuild_s:.1f} s "
        f"({stats.readings:,} readings replayed, {stats.readings / rebuild_s:,.0f}/s); bare InfluxQL read of "
        f"all {points:,} points {read_s:.1f} s "
        f"(baseline; rebuild = {rebuild_s / read_s:.2f} x the read). Load average {load0:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end, {os.cpu_count()} cores."
    )


if __name__ == "__main__":
    main()
