"""A timeline plot of a backtest: readings, the measure the rules judge, warnings and events.

One panel per sensor involved (those warned about or named in events, the most severe
first): the readings (bars for rain per report, a line otherwise), for rain the rolling
3-hour total on a second axis, the warning levels as coloured bands along the top, and the
recorded events as hatched bands beneath them. Written with matplotlib's Agg backend, so it
needs no display.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd  # type: ignore[import-untyped]

from ews.levels import Level
from ews.sensors import SensorRegistry
from rules.score import Episode, Event

COLOURS = {Level.BLUE: "#1f6fd1", Level.YELLOW: "#e8c21a", Level.ORANGE: "#f07f13", Level.RED: "#d62020"}
BEIJING = "Asia/Shanghai"


def _t(ms: int) -> datetime:
    return pd.Timestamp(ms, unit="ms", tz="UTC").tz_convert(BEIJING).to_pydatetime()


def involved(eps: list[Episode], events: list[Event], sensors: SensorRegistry, most: int) -> list[str]:
    """Sensor ids to show, the most severe first."""
    rank: dict[str, int] = {}
    for ep in eps:
        ids = [ep.subject] if ep.subject in sensors else [
            s.id for s in sensors.sensors if s.community.startswith(ep.subject)]
        for sid in ids:
            rank[sid] = max(rank.get(sid, 0), int(ep.peak) * 2 + (ep.kind != "device"))
    for ev in events:
        ids = [ev.subject] if not ev.region else [s.id for s in sensors.sensors if s.community.startswith(ev.subject)]
        for sid in ids:
            if sid in sensors:
                rank[sid] = max(rank.get(sid, 0), int(ev.level) * 2)
    return sorted(rank, key=lambda s: (-rank[s], s))[:most]


def plot(path: Path | str, history: pd.DataFrame, eps: list[Episode], events: list[Event],
         sensors: SensorRegistry, title: str, most: int = 8) -> list[str]:
    """Write the PNG; returns the sensors shown."""
    shown = involved(eps, events, sensors, most)
    n = max(1, len(shown))
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.3 * n + 0.8), sharex=True, squeeze=False)
    for ax, sid in zip(axes[:, 0], shown, strict=False):
        s = sensors.get(sid)
        rows = history[history["sensor"] == sid].sort_values("ts")
        when = [_t(int(t)) for t in rows["ts"]]
        unit = sensors.kinds[s.kind].unit if s.kind in sensors.kinds else ""
        if s.kind == "rain":
            ax.bar(when, rows["value"], width=0.003, color="#5b8fd6", label=f"rain per report ({unit})")
            idx = pd.to_datetime(rows["ts"], unit="ms")
            total = pd.Series(rows["value"].to_numpy(), index=idx).rolling("3h").sum()
            ax2 = ax.twinx()
            ax2.plot(when, total.to_numpy(), color="#333333", lw=1.2, label="rain in 3 h")
            ax2.set_ylabel("3 h (mm)", fontsize=8)
        else:
            ax.plot(when, rows["value"], color="#2a6f97", lw=1.2, label=f"{s.kind} ({unit})")
        mine = [ep for ep in eps if ep.subject == sid or s.community.startswith(ep.subject)]
        rules = sorted({ep.rule for ep in mine}, key=lambda r: (r.startswith(("no_data", "water_", "rain_r",
                                                                              "rain_d")), r))
        lo, hi = ax.get_ylim()
        band = (hi - lo) * 0.07
        hi += band * 1.25 * len(rules)  # one band per rule along the top
        for row, rule in enumerate(rules):
            ax.text(when[0] if when else _t(0), hi - band * 1.25 * row - band * 0.5, f" {rule}", fontsize=7,
                    va="center", ha="left", color="#222")
        for ep in mine:
            y = hi - band * 1.25 * rules.index(ep.rule)
            for i, (t, lv) in enumerate(ep.steps):
                end = ep.steps[i + 1][0] if i + 1 < len(ep.steps) else (ep.end_ms or int(history["ts"].max()))
                ax.fill_between([_t(t), _t(end)], y - band, y, color=COLOURS.get(lv, "#999"),
                                alpha=0.5 if ep.kind == "device" else 0.85, lw=0)
        for ev in events:
            if ev.subject == sid or (ev.region and s.community.startswith(ev.subject)):
                ax.fill_between([_t(ev.start_ms), _t(ev.end_ms)], lo, lo + band, facecolor="none",
                                edgecolor=COLOURS.get(ev.level, "#999"), hatch="////", lw=0.8)
        ax.set_ylim(lo, hi)
        ax.set_title(f"{sid} ({s.kind}, {s.community})", fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=_t(0).tzinfo))
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="none", edgecolor="k", hatch="////"))
    fig.legend(handles, [*(lv.key for lv in COLOURS), "recorded event"], loc="upper right", ncol=5,
               fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return shown
