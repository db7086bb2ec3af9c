"""Trends (least-squares slopes) and forecasts, against plain Python over the same readings."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np

from detectors.trend import slopes
from detectors.windows import Windows
from ews.levels import Level
from ews.models import LevelChange, ReadingBatch
from ews.sensors import Sensor, SensorRegistry
from rules.engine import RuleEngine
from rules.loader import load_rules

H = 3_600_000
M5 = 300_000
T0 = 1_782_000_000_000


def plain_fit(points: list[tuple[int, float]], t: int, span: int, min_points: int = 3
              ) -> tuple[float, float]:
    """Least squares of v on hours relative to t over (t - span, t], by the textbook formula."""
    pts = [((ts - t) / H, v) for ts, v in points if t - span < ts <= t]
    if len(pts) < min_points:
        return math.nan, math.nan
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return math.nan, math.nan
    b = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return my - b * mx, b


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-7)


def sensor(sid: str, **params: float) -> Sensor:
    return Sensor(id=sid, kind="water_level", community="440106001001", lat=23.1, lon=113.3, params=params)


def rules(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rules.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_slopes_match_plain_least_squares_with_gaps_and_few_points() -> None:
    rng = random.Random(12)
    n = 9
    w = Windows(n, 64, 3 * H)
    stored: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    clock = [T0] * n
    spans = np.array([H, 2 * H], np.int64)
    for _ in range(120):
        rows = np.array(sorted(rng.sample(range(n), rng.randint(1, n))))
        ts, vals = [], []
        for r in rows:
            clock[r] += rng.choice([M5, M5, M5, 2 * M5, 50 * 60_000, 3 * H])
            ts.append(clock[r])
            vals.append(round(5 + rng.uniform(-0.5, 0.5) + (clock[r] - T0) / H * 0.05, 3))
        w.insert(rows, np.array(ts, np.int64), np.array(vals))
        for r, t, v in zip(rows, ts, vals, strict=True):
            stored[r].append((t, v))
        a, b = slopes(w, rows, np.array(ts, np.int64), spans, 64)
        for k, r in enumerate(rows):
            for j, span in enumerate(spans):
                ea, eb = plain_fit(stored[r], ts[k], int(span))
                assert close(a[k, j], ea) and close(b[k, j], eb), (r, span)


def test_rate_of_rise_exactly_at_the_limit_with_a_station_param(tmp_path: Path) -> None:
    p = rules(tmp_path, (
        "rules:\n  - id: rise\n    select: {kind: water_level}\n"
        "    measure: {type: value, trends: {rise_1h: 1h}}\n"
        "    params: {rise_limit: 0.3}\n"
        "    levels: {blue: {rise_1h: '$rise_limit'}}\n"))
    # station A has its own limit 0.5 m/h; B takes the rule's default 0.3 m/h
    reg = SensorRegistry([sensor("WL-A", rise_limit=0.5), sensor("WL-B")])
    engine = RuleEngine(load_rules(p), reg)
    # both rise exactly 0.3 m/h (0.025 m every 5 min) for an hour, then level off
    vals = [5.0 + 0.025 * k for k in range(13)] + [5.3] * 14
    ts = [T0 + k * M5 for k in range(len(vals))]
    changes = engine.process(ReadingBatch.of([0] * len(ts) + [1] * len(ts), ts + ts, vals + vals))
    assert all(c.subject == "WL-B" for c in changes)
    expected = []
    level = 0
    for k, t in enumerate(ts):
        _, b = plain_fit(list(zip(ts[:k + 1], vals[:k + 1], strict=True)), t, H)
        new = 1 if not math.isnan(b) and b >= 0.3 - 1e-9 else 0 if not math.isnan(b) else level
        if new != level:
            expected.append((t, level, new))
            level = new
    assert expected and expected[0] == (ts[2], 0, 1)  # three readings make the first trend
    assert [(c.event_ts_ms, int(c.before), int(c.after)) for c in changes] == expected
    assert changes[0].measure == "rise_1h" and changes[0].unit == "m/h" and changes[0].threshold == 0.3


def test_value_forecast_warns_ahead_and_states_the_predicted_time(tmp_path: Path) -> None:
    p = rules(tmp_path, (
        "rules:\n  - id: fc\n    select: {kind: water_level}\n"
        "    measure: {type: value, forecasts: {in_1h: {of: value, horizon: 1h, fit: 1h}}}\n"
        "    levels: {yellow: {in_1h: '$warning_level'}}\n"))
    engine = RuleEngine(load_rules(p), SensorRegistry([sensor("WL-A", warning_level=10.0)]))
    rng = random.Random(3)
    # rising 0.6 m/h with a little noise from 8.0 m
    series = [(T0 + k * M5, round(8.0 + 0.05 * k + rng.uniform(-0.01, 0.01), 3)) for k in range(40)]
    got: list[LevelChange] = []
    for t, v in series:
        got += engine.process(ReadingBatch.of([0], [t], [v]))
    first = None
    for k, (t, _) in enumerate(series):
        a, b = plain_fit(series[:k + 1], t, H)
        if not math.isnan(a) and a + b >= 10.0 - 1e-7:
            first = (k, t, a, b)
            break
    assert first is not None
    k, t, a, b = first
    c = got[0]
    assert (c.event_ts_ms, c.after, c.measure, c.value) == (t, Level.YELLOW, "water_level", series[k][1])
    assert series[k][1] < 10.0  # it warned before the river got there
    eta_ms = (10.0 - a) / b * H
    assert c.predicted_ts_ms is not None and c.lead_s is not None
    assert abs(c.predicted_ts_ms - (t + eta_ms)) <= 2 and math.isclose(c.lead_s, eta_ms / 1000, rel_tol=1e-6)
    assert 0 < c.lead_s <= 3600


def plain_rain_forecast(series: list[tuple[int, float]], t: int, window: int, horizon: int, fit: int) -> float:
    def s(span: int) -> float:
        return sum(v for ts, v in series if t - span < ts <= t) if span > 0 else 0.0

    intensity = s(fit) / fit
    best = s(window)
    for f in (0.25, 0.5, 0.75, 1.0):
        h = round(f * horizon)
        best = max(best, round(s(window - h) + intensity * h, 6))
    return best


def test_accumulation_forecast_and_its_lead(tmp_path: Path) -> None:
    p = rules(tmp_path, (
        "rules:\n  - id: rain_fc\n    select: {kind: rain}\n"
        "    measure:\n      type: accumulation\n      windows: {rain_3h: 3h}\n"
        "      forecasts: {next_1h: {of: rain_3h, horizon: 1h, fit: 1h}}\n"
        "    levels: {orange: {next_1h: 50}, red: {rain_3h: 100}}\n"))
    reg = SensorRegistry([Sensor(id="RG-1", kind="rain", community="440106001001", lat=23.1, lon=113.3)])
    engine = RuleEngine(load_rules(p), reg)
    pattern = [0.5] * 12 + [2.0] * 6 + [4.0] * 12 + [0.0] * 40
    series = [(T0 + k * M5, v) for k, v in enumerate(pattern)]
    got: list[LevelChange] = []
    for t, v in series:
        got += engine.process(ReadingBatch.of([0], [t], [v]))
    expected_open = next(t for t, _ in series if plain_rain_forecast(
        [x for x in series if x[0] <= t], t, 3 * H, H, H) >= 50)
    observed_50 = next(t for t, _ in series if sum(v for ts, v in series if t - 3 * H < ts <= t) >= 50)
    opened = got[0]
    assert (opened.event_ts_ms, opened.after, opened.measure) == (expected_open, Level.ORANGE, "rain_3h")
    assert expected_open < observed_50
    past = [x for x in series if x[0] <= expected_open]
    inside = sum(v for ts, v in past if expected_open - 3 * H < ts <= expected_open)
    assert opened.value == inside < 50
    # the predicted crossing, found here minute by minute
    intensity = sum(v for ts, v in past if expected_open - H < ts <= expected_open) / H
    h = next(h for h in range(0, H + 1, 60_000)
             if round(sum(v for ts, v in past if expected_open + h - 3 * H < ts <= expected_open)
                      + intensity * h, 6) >= 50)
    assert opened.predicted_ts_ms == expected_open + h and opened.lead_s == h / 1000
    assert got[-1].after == Level.NONE and got[-1].predicted_ts_ms is None
