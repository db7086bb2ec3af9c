"""`ews simulate FILE|NAME`: run a scenario against the configured broker, with progress.

NAME is a shipped scenario (rainstorm, typhoon, river_flood, gas_leak, fire, faulty_network,
quiet_day); FILE is a scenario YAML of one's own. Command-line options override the file.
`--dry-run` runs the scenario through the configured rules alone and checks its `expect:`
section, touching no broker.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ews.config import Config, load_config, secret
from ews.sensors import SensorRegistry
from ews.yamlfile import ConfigError, Problem
from simulators.compose import Run, run
from simulators.publisher import publish_stream, tls_hook
from simulators.scenario import MAX_DURATION_MS, Scenario, load_scenario

BEIJING_FMT = "%Y-%m-%d %H:%M"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _overrides(sc: Scenario, args: argparse.Namespace) -> Scenario:
    update: dict[str, object] = {}
    if args.speed is not None:
        update["speed"] = args.speed
    if args.seed is not None:
        update["seed"] = args.seed
    if args.batch:
        update["batch"] = True
    if args.drill is not None:
        update["drill"] = args.drill
    if args.hours is not None:
        duration = int(args.hours * 3_600_000) // sc.tick * sc.tick
        if not sc.tick <= duration <= MAX_DURATION_MS:  # what the file's own duration must meet
            raise ConfigError([Problem("command line", None, "--hours", (
                f"{args.hours:g} h gives {duration // 60_000} min; a scenario lasts from one tick "
                f"({sc.tick // 60_000} min) to {MAX_DURATION_MS // 3_600_000} h"))])
        update["duration"] = duration
    return sc.model_copy(update=update) if update else sc


def run_simulation(args: argparse.Namespace) -> int:
    console = Console()
    cfg = load_config(args.config)
    sensors = cfg.registries.load().sensors
    sc = _overrides(load_scenario(args.scenario, sensors), args)
    sim = run(sc, sensors)
    _describe(console, sim)
    if args.dry_run:
        return _dry_run(console, cfg, sim, sensors)
    if sc.drill and not cfg.mqtt.drill_root:
        console.print("[red]this configuration accepts no drills (mqtt.drill_root is unset)[/]")
        return 2
    root = cfg.mqtt.drill_root if sc.drill and cfg.mqtt.drill_root else "ews"
    with Progress(
        TextColumn(f"[bold]{sc.name}[/]"), BarColumn(), TextColumn("{task.fields[clock]}"),
        TextColumn("{task.fields[sent]:,} readings"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("scenario", total=max(1, len(sim.stream.send_groups())), sent=0, clock="")

        def progress(done: int, total: int, readings: int, send_ms: int) -> None:
            clock = datetime.fromtimestamp(send_ms / 1000, SHANGHAI).strftime(BEIJING_FMT)
            bar.update(task, completed=done, total=total, sent=readings, clock=clock)

        sent = publish_stream(
            sim.stream, cfg.mqtt.host, cfg.mqtt.port, speed=sc.speed, batch=sc.batch, root=root,
            client_id=f"ews-sim-{int(time.time())}", username=cfg.mqtt.username,
            password=secret(cfg.mqtt.password_env), configure=tls_hook(cfg.mqtt), progress=progress,
        )
    hours = sc.duration / 3_600_000
    console.print(
        f"published {sent:,} readings from {len(sensors)} sensors over {hours:g} h of event time"
        + (f" under {root}/ as a drill (演练)" if sc.drill else "")
    )
    return 0


def _describe(console: Console, sim: Run) -> None:
    sc = sim.scenario
    speed = "as fast as possible" if math.isinf(sc.speed) else f"{sc.speed:g}x"
    start = datetime.fromtimestamp(sim.start_ms / 1000, SHANGHAI).strftime(BEIJING_FMT)
    console.print(
        f"[bold]{sc.name}[/]: {sc.duration / 3_600_000:g} h from {start}, a reading every {sc.tick // 60_000} min, "
        f"{len(sim.stream):,} messages-to-be at {speed}; models: "
        + (", ".join(m.type for m in sc.models) or "quiet day only")
        + (" [bold magenta]drill 演练[/]" if sc.drill else "")
    )
    if sim.faults:
        t = Table(title="faults", title_justify="left")
        for col in ("#", "type", "sensors", "window", "rows"):
            t.add_column(col)
        for a in sim.faults:
            names = ", ".join(a.sensors[:4]) + (f" +{len(a.sensors) - 4}" if len(a.sensors) > 4 else "")
            window = f"{(a.start_ms - sim.start_ms) / 3_600_000:g} h - {(a.end_ms - sim.start_ms) / 3_600_000:.3g} h"
            t.add_row(str(a.index), a.type, names, window, str(a.rows))
        console.print(t)


def _dry_run(console: Console, cfg: Config, sim: Run, sensors: SensorRegistry) -> int:
    from rules.loader import load_rules
    from simulators.dryrun import unmet, warnings_of

    warnings = warnings_of(sim.stream, sensors, load_rules(cfg.rules, cfg.rules_profile))
    peaks = Counter((w["rule"], int(w["peak_level"])) for w in warnings)
    t = Table(title="warnings the rules would raise (highest level per subject)", title_justify="left")
    for col in ("rule", "blue", "yellow", "orange", "red"):
        t.add_column(col, justify="right" if col != "rule" else "left")
    for rule in sorted({r for r, _ in peaks}):
        t.add_row(rule, *(str(peaks.get((rule, lv), "")) for lv in (1, 2, 3, 4)))
    console.print(t)
    problems = unmet(sim.scenario, warnings, sensors)
    for p in problems:
        console.print(f"[red]expectation not met[/]: {p}")
    if sim.scenario.expect and not problems:
        console.print(f"all {len(sim.scenario.expect)} expectations met")
    return 1 if problems else 0
