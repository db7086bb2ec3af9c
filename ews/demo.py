"""`ews demo`: a simulated rainstorm over the sample district, through the real pipeline.

Starts Mosquitto and InfluxDB on free loopback ports (under the demo's state folder), a local
webhook receiver standing in for the duty system, and the pipeline; publishes the storm over
MQTT; shows each warning as it is issued; ends with what was stored and delivered, counted back
from InfluxDB, SQLite and the receiver rather than from the pipeline's own counters.
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
from collections import Counter, deque
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ews.config import ChannelConfig, Config, InfluxConfig, MqttConfig, NotifierConfig, RegistryConfig
from ews.levels import Level
from ews.pipeline import Pipeline
from ews.servers import local_servers
from ews.webhook_receiver import WebhookReceiver
from ingest.influx_v1 import InfluxV1
from notifiers.channels import ConsoleChannel
from notifiers.lifecycle import Transition
from simulators.publisher import publish_result
from simulators.rainstorm import StormParams, simulate_rainstorm

SHANGHAI = ZoneInfo("Asia/Shanghai")
LEVEL_STYLE = {"blue": "bold blue", "yellow": "bold yellow", "orange": "bold dark_orange", "red": "bold red"}
SECRET_ENV = "EWS_DEMO_WEBHOOK_SECRET"


def _clock(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, SHANGHAI).strftime("%m-%d %H:%M")


class _View:
    """What the live screen shows: progress of the storm and the latest warnings."""

    def __init__(self, pipeline: Pipeline, total_ticks: int):
        self.pipeline = pipeline
        self.rows: deque[Transition] = deque(maxlen=14)
        self.all: list[Transition] = []
        self.lock = threading.Lock()
        self.progress = Progress(
            TextColumn("[bold]storm[/] {task.fields[clock]}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("readings {task.fields[sent]:,}"), TimeElapsedColumn(),
        )
        self.task = self.progress.add_task("storm", total=total_ticks, clock="", sent=0)

    def on_transition(self, t: Transition) -> None:
        with self.lock:
            self.rows.append(t)
            self.all.append(t)

    def table(self) -> Table:
        tab = Table(title="预警 warnings as issued", expand=True, title_justify="left")
        tab.add_column("event time", no_wrap=True)
        tab.add_column("街道 / 社区", ratio=1, overflow="ellipsis", no_wrap=True, min_width=12)
        for col in ("sensor", "transition", "level", "measure", "value"):
            tab.add_column(col, no_wrap=True)
        regions = self.pipeline.regions
        with self.lock:
            rows = list(self.rows)
        for t in rows:
            w = t.warning
            lvl = Level(t.level_after if t.type != "resolve" else t.level_before)
            tab.add_row(
                _clock(int(w["updated_event_ts_ms"])),
                f'{regions.get(w["street"]).name} {regions.get(w["community"]).name}', w["subject"], t.type,
                f"[{LEVEL_STYLE[lvl.key]}]{lvl.zh} {lvl.key}[/]" if t.type != "resolve" else "解除 resolved",
                w["measure"], f"{w['value']:.1f} {w['unit']}" if w["value"] is not None else "-",
            )
        return tab

    def render(self) -> Group:
        return Group(self.progress, self.table())


def run_demo(args: argparse.Namespace) -> int:
    console = Console()
    state: Path = args.state_dir.resolve()
    if state.exists():
        shutil.rmtree(state)  # every demo starts from an empty district
    os.environ.setdefault(SECRET_ENV, "demo-secret-change-me")
    with local_servers(state / "servers") as srv:
        receiver = WebhookReceiver(os.environ[SECRET_ENV]).start()
        cfg = Config(
            mqtt=MqttConfig(port=srv.mqtt.port, client_id="ews-demo-pipeline"),
            influxdb=InfluxConfig(url=srv.influx_url, database="ews_demo"),
            registries=RegistryConfig.sample(),
            rules_profile="guangdong",  # the sample district is in Guangzhou
            state_dir=state / "pipeline",
            notifiers=NotifierConfig(channels=[
                ChannelConfig(name="console", type="console"),
                ChannelConfig(name="webhook", type="webhook", url=receiver.url, secret_env=SECRET_ENV),
            ]),
        )
        console_lines: list[str] = []
        pipeline = Pipeline(cfg, channels={"console": ConsoleChannel("console", sink=console_lines.append)})
        hours = 6.0
        start_ms = (int(time.time() * 1000) - int(hours * 3600 * 1000)) // 300_000 * 300_000
        result = simulate_rainstorm(pipeline.sensors, StormParams(duration_h=hours), start_ms, args.seed)
        view = _View(pipeline, result.n_ticks)
        pipeline.listeners.append(view.on_transition)
        console.print(
            f"[bold]ews demo[/]: {len(pipeline.sensors)} sensors in {len(pipeline.regions.streets())} streets of "
            f"天河区, {len(pipeline.ruleset.rules)} rules; Mosquitto on 127.0.0.1:{srv.mqtt.port}, "
            f"InfluxDB on {srv.influx_url}; {hours:g} h of storm at {args.speed:g}x"
        )
        pipeline.start()
        try:
            sent = 0
            with Live(view.render(), console=console, refresh_per_second=4) as live:
                def progress(done: int, total: int, readings: int, event_ms: int) -> None:
                    view.progress.update(view.task, completed=done, sent=readings, clock=_clock(event_ms))
                    live.update(view.render())

                sent = publish_result(
                    result, pipeline.sensors, "127.0.0.1", srv.mqtt.port, speed=args.speed, progress=progress
                )
                _wait_idle(pipeline, receiver, timeout_s=60)
                live.update(view.render())
            _summary(console, pipeline, srv.influx_url, sent, view, receiver, console_lines)
        finally:
            pipeline.stop()
            receiver.stop()
            if args.keep:
                console.print(f"--keep: servers stay up; state in {state}. Press Ctrl-C to stop them.")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
    return 0


def _wait_idle(pipeline: Pipeline, receiver: WebhookReceiver, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        if pipeline.idle():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                return
        else:
            quiet_since = None
        time.sleep(0.1)


def _summary(
    console: Console, pipeline: Pipeline, influx_url: str, sent: int, view: _View, receiver: WebhookReceiver,
    console_lines: list[str],
) -> None:
    db = InfluxV1(influx_url, pipeline.cfg.influxdb.database)
    stored = {k: db.count(k) for k in pipeline.sensors.kinds}
    db.close()
    t = Table(title="readings", title_justify="left")
    t.add_column("kind")
    t.add_column("stored in InfluxDB", justify="right")
    for kind, count in stored.items():
        t.add_row(kind, f"{count:,}")
    total = sum(stored.values())
    t.add_row("[bold]total[/]", f"[bold]{total:,}[/] of {sent:,} published" + (" ✓" if total == sent else " ✗ MISSING"))
    console.print(t)

    warnings = pipeline.store.warnings()
    by = Counter((pipeline.regions.get(w["street"]).name, Level(w["peak_level"]).key) for w in warnings)
    streets = sorted({s for s, _ in by})
    w = Table(title=f"warnings by street and highest level ({len(warnings)} warnings)", title_justify="left")
    w.add_column("街道 street")
    for lvl in ("blue", "yellow", "orange", "red"):
        w.add_column(f"[{LEVEL_STYLE[lvl]}]{Level.parse(lvl).zh}[/]", justify="right")
    for s in streets:
        w.add_row(s, *(str(by.get((s, lvl), "")) for lvl in ("blue", "yellow", "orange", "red")))
    console.print(w)

    outbox = pipeline.store.outbox()
    n = Table(title="notifications", title_justify="left")
    for col in ("channel", "sent", "pending", "failed"):
        n.add_column(col, justify="right" if col != "channel" else "left")
    for ch in sorted({o["channel"] for o in outbox}):
        states = Counter(o["state"] for o in outbox if o["channel"] == ch)
        n.add_row(ch, str(states["sent"]), str(states["pending"]), str(states["failed"]))
    console.print(n)
    rec = receiver.received
    console.print(
        f"webhook receiver: {len(rec.keys)} distinct messages, {rec.bad_signatures} bad signatures, "
        f"{rec.duplicates} duplicates; transitions shown live: {len(view.all)}"
    )
    if console_lines:
        console.print("[bold]last console notifications[/]")
        for line in console_lines[-5:]:
            console.print("  " + line)
