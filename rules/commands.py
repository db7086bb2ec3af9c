"""The rules' command-line entry points: `ews rules explain SENSOR` and `ews backtest`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from ews.config import Config, load_config, sample_dir
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from rules.engine import RuleEngine
from rules.loader import load_rules
from rules.model import RuleSet
from rules.profiles import active_profiles, beijing_today


def _setup(args: argparse.Namespace) -> tuple[Config | None, SensorRegistry, RuleSet]:
    cfg = load_config(args.config) if args.config else None
    if cfg is not None:
        regions = RegionRegistry.load(cfg.registries.regions)
        sensors = SensorRegistry.load(cfg.registries.sensors, regions)
        path = Path(args.rules) if args.rules else cfg.rules
        calendar = [(c.profile, c.from_, c.to) for c in cfg.rule_engine.calendar]
        profiles = args.profile if args.profile else active_profiles(
            cfg.rules_profile, calendar, cfg.rule_engine.profiles, beijing_today(time.time()))
    else:
        regions = RegionRegistry.load(args.regions or sample_dir() / "regions.yaml")
        sensors = SensorRegistry.load(args.sensors or sample_dir() / "sensors.yaml", regions)
        path = Path(args.rules) if args.rules else None
        profiles = args.profile or []
    return cfg, sensors, load_rules(path, profiles)


def _num(x: object) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def explain(args: argparse.Namespace) -> int:
    _, sensors, ruleset = _setup(args)
    if args.sensor not in sensors:
        print(f"sensor {args.sensor} is not in the sensor registry", file=sys.stderr)
        return 2
    engine = RuleEngine(ruleset, sensors)
    items = engine.explain(args.sensor)
    if args.json:
        print(json.dumps(items, ensure_ascii=False, indent=2))
        return 0
    s = sensors.get(args.sensor)
    kind = sensors.kinds[s.kind]
    print(f"{s.id} {s.name} - {s.kind} ({kind.unit}, every {kind.interval_s:g} s), community {s.community}")
    if s.params:
        print("  params: " + ", ".join(f"{k} {_num(v)}" for k, v in s.params.items()))
    print(f"rules version {ruleset.version}, profiles: {', '.join(ruleset.profiles) or 'none (base rules)'}")
    for item in items:
        if "skipped" in item:
            for line in item["skipped"]:
                print(f"  SKIPPED {line}")
            continue
        where = f"{item['file']}:{item['line']}" + (f", profile {item['profile']}" if item.get("profile") else "")
        print(f"\n{item['rule']} {item['name']}  [{where}]  version {item['version']}")
        if "detector" in item:
            params = item.get("params") or {}
            extra = ", ".join(f"{k} {_num(v)}" for k, v in params.items())
            clears = f"clears after {int(item['clear_after_ms']) / 60000:g} min clean"
            if "timeout_s" in item:
                extra = f"silent after {_num(item['timeout_s'])} s (wall clock); district {item['district']}"
                clears = "clears at its next reading"
            print(f"  device fault: {item['detector']} -> {item['warning_level']} warning"
                  f"{'; ' + extra if extra else ''}; {clears}")
            continue
        for m, text in item["measures"].items():
            print(f"  {m}: {text}")
        exprs: dict[str, dict[str, str]] = item.get("expressions") or {}
        for m, by in item["thresholds"].items():
            src = exprs.get(m, {})
            print(f"  {m}: " + ", ".join(f"{lv} >= {_num(v)}" + (f" ({src[lv]})" if lv in src else "")
                                         for lv, v in by.items()))
        hyst = {k: v for k, v in item["hysteresis"].items() if v}
        print(f"  hysteresis {', '.join(f'{k} {_num(v)}' for k, v in hyst.items()) or '0'}; "
              f"hold {int(item['hold_ms']) / 60000:g} min on entry, {int(item['hold_exit_ms']) / 60000:g} min on exit")
        for key in ("area", "flap", "input"):
            if key in item:
                print(f"  {key}: {item[key]}")
    return 0


def backtest(args: argparse.Namespace) -> int:
    from ingest.influx import make_reader
    from rules.backtest import (
        add_score,
        from_influx,
        print_changes,
        print_score,
        registry_of,
        replay,
        summary_counts,
        write_changes,
    )
    from rules.history import HistoryError, csv_history, parse_ts
    from rules.score import load_events
    from rules.timeline import plot

    console = Console(width=None if sys.stdout.isatty() else 150)
    cfg, sensors, ruleset = _setup(args)
    try:
        if args.csv:
            history = csv_history(args.csv)
        else:
            if cfg is None:
                print("--influx needs --config (the InfluxDB to read)", file=sys.stderr)
                return 2
            import pandas as pd  # type: ignore[import-untyped]

            until = int(parse_ts(pd.Series([args.to]), "--to")[0]) if args.to else int(time.time() * 1000)
            since = int(parse_ts(pd.Series([args.since]), "--from")[0]) if args.since else until - 24 * 3_600_000
            influx = make_reader(cfg.influxdb)
            kinds = sorted({r.kind for r in ruleset.rules})
            console.print(f"reading {', '.join(kinds)} from {cfg.influxdb.url} database {cfg.influxdb.database}")
            try:
                history = from_influx(influx, kinds, since, until, console)
            finally:
                influx.close()
        if args.csv and (args.since or args.to):
            import pandas as pd

            if args.since:
                history = history[history["ts"] >= int(parse_ts(pd.Series([args.since]), "--from")[0])]
            if args.to:
                history = history[history["ts"] <= int(parse_ts(pd.Series([args.to]), "--to")[0])]
        events = load_events(args.events) if args.events else []
    except HistoryError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if len(history) == 0:
        print("no readings in the history given", file=sys.stderr)
        return 1
    console.print(f"rules version {ruleset.version} (profiles: {', '.join(ruleset.profiles) or 'none'}), "
                  f"{len(history)} readings of {history['sensor'].nunique()} sensors")
    result = replay(ruleset, sensors, history, console)
    if result.unknown:
        console.print(f"[yellow]{len(result.unknown)} sensors in the history are not registered and were "
                      f"left out: {', '.join(result.unknown[:10])}{' ...' if len(result.unknown) > 10 else ''}")
    rate = result.readings / result.seconds if result.seconds else 0.0
    console.print(f"replayed {result.readings} readings in {result.seconds:.2f} s ({rate:,.0f} readings/s)")
    print_changes(console, result.changes, len(result.changes) if args.all else 40)
    counts = summary_counts(result.changes)
    console.print("warnings raised by level: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    if args.changes_csv:
        write_changes(Path(args.changes_csv), result.changes)
        console.print(f"level changes written to {args.changes_csv}")
    status = 0
    if events:
        s = add_score(result, events, args.max_lead, set(args.rule) if args.rule else None,
                      sensors)
        print_score(console, s)
        if args.min_accuracy is not None and s.accuracy < args.min_accuracy:
            status = 1
    if args.plot:
        sub = registry_of(history, sensors)
        shown = plot(args.plot, history, result.episodes, events, sub,
                     f"backtest: rules {ruleset.version}, {result.readings} readings")
        console.print(f"timeline of {len(shown)} sensors written to {args.plot}")
    return status
