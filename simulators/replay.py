"""Replay a recorded event (like the "5.22" rainstorm) from a CSV file or InfluxDB history.

The readings go out as they were recorded, in time order, compressed by `speed`. By default
their timestamps are shifted so the event ends now (so the duty screen shows today's times
and no reading is refused as lying in the future), and they are published as a drill, under
the drill topic root: the pipeline keeps a drill's detector state and warnings apart from the
real ones, labels its messages 演练 and sends them only to the drill audience. Publishing a
replay as live readings is for a system that is not in service.
"""

from __future__ import annotations

import argparse
import csv
import re
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ews.config import load_config, secret
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.yamlfile import ConfigError, Problem
from ingest.decode import parse_ts
from ingest.influx import make_reader
from ingest.influx_v1 import InfluxV1
from ingest.reasons import Rejected
from simulators.publisher import publish_stream, tls_hook
from simulators.stream import Stream

_REGION = re.compile(r"^\d{6}(\d{3}(\d{3})?)?$")


def selector(spec: str | None, registry: SensorRegistry) -> set[int] | None:
    """Registry indices named by comma-separated sensor ids and region codes; None: all."""
    if not spec:
        return None
    out: set[int] = set()
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part in registry:
            out.add(registry.index[part])
        elif _REGION.fullmatch(part):
            found = {i for i, s in enumerate(registry.sensors) if s.community.startswith(part)}
            if not found:
                raise ConfigError([Problem("--sensors", None, part, "no registered sensor lies in this region")])
            out |= found
        else:
            raise ConfigError([Problem("--sensors", None, part, "neither a registered sensor nor a region code")])
    return out


def read_csv(path: Path, registry: SensorRegistry, only: set[int] | None = None) -> Stream:
    """Rows `sensor, ts, value` (a header line naming them, any column order); every bad row is
    reported with its line, and nothing is replayed from a file with bad rows."""
    sensor: list[int] = []
    ts: list[int] = []
    value: list[float] = []
    problems: list[Problem] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = {"sensor", "ts", "value"} - set(reader.fieldnames or [])
            if missing:
                raise ConfigError([Problem(str(path), 1, "header", f"missing column(s): {', '.join(sorted(missing))}")])
            for row in reader:
                line = reader.line_num
                sid = (row["sensor"] or "").strip()
                if sid not in registry:
                    problems.append(Problem(str(path), line, "sensor", f"sensor {sid!r} is not registered"))
                    continue
                try:
                    t = parse_ts(_number_or_text(row["ts"]))
                    v = float(row["value"])
                except (Rejected, ValueError, TypeError) as exc:
                    why = exc.detail if isinstance(exc, Rejected) else f"value {row['value']!r} is not a number"
                    problems.append(Problem(str(path), line, "ts" if isinstance(exc, Rejected) else "value", why))
                    continue
                i = registry.index[sid]
                if only is None or i in only:
                    sensor.append(i)
                    ts.append(t)
                    value.append(v)
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read file: {exc}")]) from None
    if problems:
        raise ConfigError(problems[:20] + ([Problem(str(path), None, "", f"... {len(problems) - 20} more")]
                                           if len(problems) > 20 else []))
    order = np.lexsort((np.asarray(sensor), np.asarray(ts)))
    return Stream.of(registry, np.asarray(sensor, np.int64)[order], np.asarray(ts, np.int64)[order],
                     np.asarray(value, np.float64)[order])


def _number_or_text(raw: str | None) -> float | str:
    text = (raw or "").strip()
    try:
        return float(text) if re.fullmatch(r"[0-9.eE+-]+", text) else text
    except ValueError:
        return text


def read_influx(
    db: InfluxV1, registry: SensorRegistry, from_ms: int, to_ms: int, only: set[int] | None = None
) -> Stream:
    """Every stored reading of the registry's sensors in [from, to), by InfluxQL `/query`."""
    sensor: list[int] = []
    ts: list[int] = []
    value: list[float] = []
    for kind in sorted({s.kind for s in registry.sensors}):
        series = db.query(
            f'SELECT "value" FROM "{kind}" WHERE time >= {from_ms}ms AND time < {to_ms}ms GROUP BY "sensor"'
        )
        for s in series:
            i = registry.index.get(s.get("tags", {}).get("sensor", ""))
            if i is None or (only is not None and i not in only):
                continue
            for t, v in s["values"]:
                if v is not None:
                    sensor.append(i)
                    ts.append(int(t))
                    value.append(float(v))
    order = np.lexsort((np.asarray(sensor), np.asarray(ts)))
    return Stream.of(registry, np.asarray(sensor, np.int64)[order], np.asarray(ts, np.int64)[order],
                     np.asarray(value, np.float64)[order])


def ending_now(stream: Stream, now_ms: int | None = None) -> Stream:
    """The stream moved in time so its last reading is stamped now."""
    if len(stream) == 0:
        return stream
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return stream.shifted(now_ms - int(stream.ts.max()))


def _interval(text: str) -> tuple[int, int]:
    try:
        a, b = text.split("/")
        start, end = datetime.fromisoformat(a), datetime.fromisoformat(b)
    except ValueError:
        raise ConfigError([Problem("--influx", None, text, "expected FROM/TO, two RFC 3339 times")]) from None
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        raise ConfigError([Problem("--influx", None, text, "give both times with a UTC offset, FROM before TO")])
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def run_replay(args: argparse.Namespace) -> int:
    console = Console()
    cfg = load_config(args.config)
    regions = RegionRegistry.load(cfg.registries.regions)
    sensors = SensorRegistry.load(cfg.registries.sensors, regions)
    only = selector(args.sensors, sensors)
    if args.csv is not None:
        stream = read_csv(args.csv, sensors, only)
        source = str(args.csv)
    else:
        start, end = _interval(args.influx)
        db = make_reader(cfg.influxdb, args.database)
        try:
            stream = read_influx(db, sensors, start, end, only)
        finally:
            db.close()
        source = f"InfluxDB {args.database or cfg.influxdb.database} {args.influx}"
    if len(stream) == 0:
        console.print(f"[red]nothing to replay from {source}[/]")
        return 1
    recorded = (int(stream.ts.min()), int(stream.ts.max()))
    if not args.keep_time:
        stream = ending_now(stream)
    drill = not args.live
    if drill and not cfg.mqtt.drill_root:
        console.print("[red]this configuration accepts no drills (mqtt.drill_root is unset); use --live[/]")
        return 2
    root = cfg.mqtt.drill_root if drill and cfg.mqtt.drill_root else "ews"
    hours = (recorded[1] - recorded[0]) / 3_600_000
    how = "as a drill (演练)" if drill else "[bold red]as LIVE readings[/]"
    console.print(
        f"replaying {len(stream):,} readings of {len(set(stream.sensor.tolist()))} sensors from {source} "
        f"({hours:.2f} h recorded) at {args.speed:g}x {how}"
    )
    with Progress(
        TextColumn("[bold]replay[/]"), BarColumn(), TextColumn("{task.fields[sent]:,} readings"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    ) as bar:
        task = bar.add_task("replay", total=max(1, len(stream.send_groups())), sent=0)
        sent = publish_stream(
            stream, cfg.mqtt.host, cfg.mqtt.port, speed=args.speed, batch=args.batch, root=root,
            client_id=f"ews-replay-{int(time.time())}", username=cfg.mqtt.username,
            password=secret(cfg.mqtt.password_env), configure=tls_hook(cfg.mqtt),
            progress=lambda done, total, n, _ms: bar.update(task, completed=done, total=total, sent=n),
        )
    console.print(f"published {sent:,} readings under {root}/")
    return 0
