"""`ews simulate rainstorm`: publish a simulated storm to the configured broker, with progress."""

from __future__ import annotations

import argparse
import time

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ews.config import load_config, secret
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from simulators.publisher import publish_result
from simulators.rainstorm import StormParams, simulate_rainstorm


def run_simulation(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    regions = RegionRegistry.load(cfg.registries.regions)
    sensors = SensorRegistry.load(cfg.registries.sensors, regions)
    # the storm ends now, so every reading lies in the past and none is refused as future
    start_ms = (int(time.time() * 1000) - int(args.hours * 3_600_000)) // 300_000 * 300_000
    result = simulate_rainstorm(sensors, StormParams(duration_h=args.hours), start_ms, args.seed)
    with Progress(
        TextColumn("[bold]rainstorm[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} ticks"),
        TextColumn("{task.fields[sent]:,} readings"), TimeElapsedColumn(), TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task("storm", total=result.n_ticks, sent=0)

        def progress(done: int, total: int, readings: int, _event_ms: int) -> None:
            bar.update(task, completed=done, total=total, sent=readings)

        sent = publish_result(
            result, sensors, cfg.mqtt.host, cfg.mqtt.port, speed=args.speed, batch=args.batch,
            client_id=f"ews-sim-{int(time.time())}", username=cfg.mqtt.username,
            password=secret(cfg.mqtt.password_env), progress=progress,
        )
    print(f"published {sent:,} readings from {len(sensors)} sensors over {args.hours:g} h of event time")
    return 0
