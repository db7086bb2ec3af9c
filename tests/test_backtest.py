"""`ews backtest` over the shipped sample night: CSV and InfluxDB give the same warnings, the
score is the one worked out here with loops, and the timeline PNG is written."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ews.cli import main
from ews.config import RegistryConfig, sample_dir
from ews.levels import Level
from ews.sensors import SensorRegistry
from ews.servers import LocalServers
from ingest.influx_v1 import InfluxV1
from rules.backtest import add_score, replay
from rules.history import HistoryError, csv_history
from rules.loader import load_rules
from rules.score import load_events

DATA = Path(__file__).parent / "data" / "backtest"
H = 3_600_000


def registry() -> SensorRegistry:
    return RegistryConfig.sample().load().sensors


def guangdong(series: list[tuple[int, float]]) -> list[tuple[int, int]]:
    """(ts, level) after each reading: yellow 6 h >= 50, orange 3 h >= 50, red 3 h >= 100."""
    out = []
    for i, (t, _) in enumerate(series):
        def total(h: int, t: int = t, i: int = i) -> float:
            return round(sum(v for u, v in series[: i + 1] if u > t - h * H), 6)

        out.append((t, 4 if total(3) >= 100 else 3 if total(3) >= 50 else 2 if total(6) >= 50 else 0))
    return out


def test_replay_and_score_match_loops() -> None:
    history = csv_history(DATA / "history.csv")
    events = load_events(DATA / "events.csv")
    reg = registry()
    result = replay(load_rules(None, "guangdong"), reg, history)
    s = add_score(result, events, 3 * H, {"rainstorm"}, reg)
    by_sensor: dict[str, list[tuple[int, float]]] = {}
    for row in history[history["sensor"].str.startswith("RG-")].sort_values("ts").itertuples():
        by_sensor.setdefault(row.sensor, []).append((int(row.ts), float(row.value)))
    levels_of = {sid: guangdong(series) for sid, series in by_sensor.items()}
    # the engine's rainstorm transitions are the loops' (device rules find nothing to flag)
    for sid in by_sensor:
        levels, prev, expected = levels_of[sid], 0, []
        for t, lv in levels:
            if lv != prev:
                expected.append((t, prev, lv))
                prev = lv
        got = [(c.event_ts_ms, int(c.before), int(c.after)) for c in result.changes
               if c.subject == sid and c.rule_id == "rainstorm"]
        assert got == expected, sid
    assert not [c for c in result.changes if c.kind == "device"]
    # the score, again with loops: first time a gauge (or any gauge of a street) held the level
    hits = 0
    for ev in events:
        ids = [ev.subject] if not ev.region else [sid for sid in by_sensor if reg.get(sid).street == ev.subject]
        times = [t for sid in ids for t, lv in levels_of[sid]
                 if lv >= ev.level and ev.start_ms - 3 * H <= t <= ev.end_ms]
        r = next(r for r in s.events if r.event is ev)
        assert r.hit == bool(times)
        if times:
            hits += 1
            assert r.lead_s == (ev.start_ms - min(times)) / 1000
    assert s.hits == hits and s.misses == len(events) - hits
    assert len(events) == 50 and s.hits >= 45
    assert 0 <= s.accuracy <= 1 and s.accuracy == s.hits / (s.hits + s.misses + s.false_alarms)


def test_cli_with_forecasts_writes_plot_and_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, out_csv = tmp_path / "timeline.png", tmp_path / "changes.csv"
    code = main(["backtest", "--csv", str(DATA / "history.csv"), "--events", str(DATA / "events.csv"),
                 "--profile", "guangdong", "--profile", "forecast", "--plot", str(png),
                 "--changes-csv", str(out_csv), "--min-accuracy", "0.8"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "accuracy (threat score)" in text and "rainstorm_forecast" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    with out_csv.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    leads = [float(r["lead_s"]) for r in rows if r["rule"] == "rainstorm_forecast" and r["lead_s"]]
    assert leads and max(leads) > 0  # the forecast rule warned ahead, and said by how much
    # an impossible bar fails the run
    assert main(["backtest", "--csv", str(DATA / "history.csv"), "--events", str(DATA / "events.csv"),
                 "--rule", "river_level", "--min-accuracy", "0.99"]) == 1


def test_events_yaml_and_bad_events(tmp_path: Path) -> None:
    good = tmp_path / "events.yaml"
    good.write_text(yaml.safe_dump({"events": [
        {"region": "440106001", "level": "orange", "start": "2020-05-22 01:00", "end": "2020-05-22T03:00:00+08:00"},
        {"sensor": "RG-0001", "level": "red", "start": 1590080400000, "end": 1590084000000},
    ]}), encoding="utf-8")
    evs = load_events(good)
    assert [(e.subject, e.level, e.region) for e in evs] == [("440106001", Level.ORANGE, True),
                                                            ("RG-0001", Level.RED, False)]
    assert evs[0].start_ms == 1590080400000  # naive times are Beijing time
    bad = tmp_path / "bad.csv"
    bad.write_text("sensor,region,level,start,end\nRG-0001,,purple,2020-05-22 01:00,2020-05-22 02:00\n",
                   encoding="utf-8")
    with pytest.raises(HistoryError, match=r"event 2.*unknown level"):
        load_events(bad)
    with pytest.raises(HistoryError, match="missing column"):
        csv_history(bad)


@pytest.mark.integration
def test_history_from_influxdb_gives_the_same_changes(
    servers: LocalServers, influx_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = registry()
    history = csv_history(DATA / "history.csv")
    db = InfluxV1(servers.influx_url, influx_db)
    db.create_database()
    lines = []
    for row in history.itertuples():
        s = reg.get(row.sensor)
        lines.append(f"{s.kind},community={s.community},district={s.district},sensor={s.id},street={s.street} "
                     f"value={float(row.value)!r} {int(row.ts)}\n")
    db.write("".join(lines).encode())
    db.close()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "influxdb": {"url": servers.influx_url, "database": influx_db},
        "registries": {"regions": str(sample_dir() / "regions.yaml"), "sensors": str(sample_dir() / "sensors.yaml")},
        "rules_profile": "guangdong",
    }), encoding="utf-8")
    start, end = int(history["ts"].min()), int(history["ts"].max())
    outs = {}
    for name, source in (("csv", ["--csv", str(DATA / "history.csv")]),
                         ("influx", ["--influx", "--from", str(start - 1), "--to", str(end)])):
        outs[name] = tmp_path / f"{name}.csv"
        assert main(["backtest", "--config", str(cfg), *source, "--changes-csv", str(outs[name])]) == 0
    capsys.readouterr()
    a, b = (pd.read_csv(outs[k]) for k in ("csv", "influx"))
    assert len(a) > 100 and a.equals(b)
