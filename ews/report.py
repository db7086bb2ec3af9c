"""`ews report`: what the warning service achieved per region and period (the plans' KPIs).

Per region (the children of `--region`, or each district) and period: warnings issued by
their highest level; the share of targeted recipients a warning message reached (a person
counts once per transition whichever of their channels delivered; the public share is the
plans' coverage figure, target >= 95 %); how many warnings reached every recipient they
targeted; delivery delay (from issuing a transition to its message being accepted) and
acknowledgement time (from issuing a warning to its first acknowledgement) percentiles;
escalations; messages given up. Out come a table on the terminal, a CSV and a PNG chart.
Periods and times are Beijing time; the store keeps UTC epoch milliseconds.

Drill warnings are left out unless `--drill`, which reports on drills only.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ews.levels import HAZARD_LEVELS
from ews.regions import RegionRegistry
from ews.store import Store
from notifiers.templates import BEIJING

PUBLIC_TARGET = 0.95
WARNING_NOTICES = ("transition", "group")  # messages that carry a warning (not reminders etc.)


@dataclass(frozen=True)
class Period:
    start_ms: int
    end_ms: int  # exclusive

    @classmethod
    def parse(cls, start: str, end: str) -> Period:
        """'2024-07-01' or '2024-07-01 08:00' in Beijing time; a date alone as the end
        includes that whole day."""
        a = _parse_time(start, end_of_day=False)
        b = _parse_time(end, end_of_day=True)
        if b <= a:
            raise ValueError(f"the period ends ({end}) before it starts ({start})")
        return cls(a, b)

    def label(self) -> str:
        fmt = "%Y-%m-%d %H:%M"
        a = datetime.fromtimestamp(self.start_ms / 1000, BEIJING).strftime(fmt)
        b = datetime.fromtimestamp(self.end_ms / 1000, BEIJING).strftime(fmt)
        return f"{a} – {b} (Beijing time)"


def _parse_time(text: str, end_of_day: bool) -> int:
    t = text.strip()
    try:
        if len(t) == 10:
            d = datetime.combine(datetime.strptime(t, "%Y-%m-%d").date(), time(), BEIJING)
            if end_of_day:
                d += timedelta(days=1)
        else:
            d = datetime.fromisoformat(t)
            d = d.replace(tzinfo=BEIJING) if d.tzinfo is None else d
    except ValueError:
        raise ValueError(f"not a date or date and time like 2024-07-01 or '2024-07-01 08:00': {text!r}") from None
    return int(d.timestamp() * 1000)


@dataclass
class RegionKpi:
    code: str
    name: str
    issued: dict[str, int] = field(default_factory=lambda: {lv.key: 0 for lv in HAZARD_LEVELS})
    targeted: int = 0  # (transition, recipient) pairs a warning message was meant for
    delivered: int = 0
    public_targeted: int = 0
    public_delivered: int = 0
    warnings_fully_delivered: int = 0
    delays_ms: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    unacknowledged: int = 0
    escalations: int = 0
    failed: int = 0

    @property
    def warnings(self) -> int:
        return sum(self.issued.values())

    def share(self, public: bool = False) -> float | None:
        n, d = (self.public_targeted, self.public_delivered) if public else (self.targeted, self.delivered)
        return d / n if n else None

    def row(self) -> dict[str, Any]:
        def pct(v: float | None) -> str:
            return "" if v is None else f"{100 * v:.1f}"

        def q(values: list[float], p: float) -> str:
            return "" if not values else f"{float(np.percentile(np.asarray(values), p)) / 1000:.1f}"

        return {
            "region": self.code, "name": self.name, "warnings": self.warnings, **self.issued,
            "recipients_targeted": self.targeted, "recipients_delivered": self.delivered,
            "delivered_pct": pct(self.share()), "public_pct": pct(self.share(public=True)),
            "warnings_fully_delivered": self.warnings_fully_delivered,
            "delay_p50_s": q(self.delays_ms, 50), "delay_p90_s": q(self.delays_ms, 90),
            "delay_p99_s": q(self.delays_ms, 99),
            "ack_p50_s": q(self.ack_ms, 50), "ack_p90_s": q(self.ack_ms, 90),
            "acknowledged": len(self.ack_ms), "unacknowledged": self.unacknowledged,
            "escalations": self.escalations, "failed": self.failed,
        }


def _buckets(regions: RegionRegistry, region: str | None, codes: set[str]) -> list[tuple[str, str]]:
    """The regions rows are reported for: the children of `region` (itself, if a community),
    or every district warnings were issued in."""
    if region is None:
        districts = sorted({c[:6] for c in codes})
        return [(d, regions.nodes[d].name if d in regions else d) for d in districts]
    node = regions.get(region)
    if not node.children:
        return [(node.code, node.name)]
    return [(c, regions.get(c).name) for c in node.children]


def collect(
    store: Store, regions: RegionRegistry, period: Period, region: str | None = None, drill: bool = False
) -> list[RegionKpi]:
    """KPIs per region for warnings issued in `period`, plus a last row for them all."""
    prefix = region or ""
    ws = store.read(
        "SELECT id, community, peak_level, opened_ts_ms, acknowledged FROM warnings "
        "WHERE opened_ts_ms >= ? AND opened_ts_ms < ? AND drill = ? AND community LIKE ? ORDER BY opened_ts_ms",
        (period.start_ms, period.end_ms, int(drill), prefix + "%"),
    )
    buckets = _buckets(regions, region, {w["community"] for w in ws})
    kpis = {code: RegionKpi(code, name) for code, name in buckets}
    total = RegionKpi(region or "all", regions.get(region).name if region else "合计 all")

    def targets(community: str) -> list[RegionKpi]:
        return [total, *(k for c, k in kpis.items() if community.startswith(c))]

    home = {w["id"]: w["community"] for w in ws}
    for w in ws:
        for k in targets(w["community"]):
            k.issued[HAZARD_LEVELS[int(w["peak_level"]) - 1].key] += 1
    if not ws:
        return [*kpis.values(), total]

    issued_at = {int(t["id"]): int(t["processed_ts_ms"]) for t in store.read(
        "SELECT t.id, t.processed_ts_ms FROM transitions t JOIN warnings w ON w.id = t.warning_id "
        "WHERE w.opened_ts_ms >= ? AND w.opened_ts_ms < ?", (period.start_ms, period.end_ms))}
    # (transition, recipient) -> warning, audience, delivered?, delay
    pairs: dict[tuple[int, str], list[Any]] = {}
    failed_rows: dict[int, str] = {}
    for row in store.read(
        "SELECT id, warning_id, transition_id, notice, state, recipients, payload, sent_ts_ms FROM outbox "
        "WHERE created_ts_ms >= ?", (period.start_ms,)
    ):
        payload = json.loads(row["payload"])
        items = payload.get("items") or [{"transition_id": row["transition_id"], "warning": payload.get("warning", {})}]
        if row["state"] == "failed" and row["warning_id"] in home:
            failed_rows[int(row["id"])] = home[row["warning_id"]]
        if row["notice"] not in WARNING_NOTICES:
            continue
        sent = row["state"] == "sent"
        for it in items:
            wid = (it.get("warning") or {}).get("id", row["warning_id"])
            tid = int(it.get("transition_id") or row["transition_id"])
            if wid not in home:
                continue
            for r in json.loads(row["recipients"]):
                p = pairs.setdefault((tid, str(r.get("id"))), [wid, r.get("audience", "internal"), False, None])
                if sent and not p[2]:
                    p[2] = True
                    if tid in issued_at and row["sent_ts_ms"] is not None:
                        p[3] = max(0, int(row["sent_ts_ms"]) - issued_at[tid])
    complete: dict[str, bool] = {}
    for (_, _), (wid, audience, ok, delay) in pairs.items():
        for k in targets(home[wid]):
            k.targeted += 1
            k.delivered += int(ok)
            if audience == "public":
                k.public_targeted += 1
                k.public_delivered += int(ok)
            if delay is not None:
                k.delays_ms.append(float(delay))
        complete[wid] = complete.get(wid, True) and bool(ok)
    for wid, ok in complete.items():
        for k in targets(home[wid]):
            k.warnings_fully_delivered += int(ok)
    for community in failed_rows.values():
        for k in targets(community):
            k.failed += 1

    first_ack: dict[str, int] = {}
    for a in store.read(
        "SELECT warning_id, action, ts_ms, detail FROM audit WHERE action IN "
        "('warning.acknowledge', 'warning.escalate') AND ts_ms >= ? ORDER BY seq", (period.start_ms,)
    ):
        wid = a["warning_id"]
        if wid not in home:
            continue
        if a["action"] == "warning.escalate":
            for k in targets(home[wid]):
                k.escalations += 1
        elif wid not in first_ack:
            first_ack[wid] = int(json.loads(a["detail"]).get("since_issued_ms", 0))
    for w in ws:
        for k in targets(w["community"]):
            if w["id"] in first_ack:
                k.ack_ms.append(float(first_ack[w["id"]]))
            else:
                k.unacknowledged += 1
    return [*kpis.values(), total]


def write_csv(kpis: list[RegionKpi], path: Path, period: Period) -> None:
    rows = [k.row() for k in kpis]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["period", *rows[0].keys()])
        w.writeheader()
        for r in rows:
            w.writerow({"period": period.label(), **r})


def plot(kpis: list[RegionKpi], path: Path, period: Period) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = kpis[:-1] or kpis
    labels = [k.code for k in regions]
    x = np.arange(len(regions))
    colours = {"blue": "#1f5fbf", "yellow": "#e6c200", "orange": "#f08c00", "red": "#d62828"}
    fig, axes = plt.subplots(1, 3, figsize=(max(10, 1.2 * len(regions) + 6), 4.5))
    bottom = np.zeros(len(regions))
    for lv, colour in colours.items():
        v = np.array([k.issued[lv] for k in regions], float)
        axes[0].bar(x, v, bottom=bottom, color=colour, label=lv)
        bottom += v
    axes[0].set_title("warnings issued by highest level", fontsize=10)
    axes[0].yaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=8)
    share = [100 * (k.share() or 0) for k in regions]
    public = [100 * (k.share(public=True) or 0) for k in regions]
    axes[1].bar(x - 0.2, share, 0.4, label="all recipients")
    axes[1].bar(x + 0.2, public, 0.4, label="public")
    axes[1].axhline(100 * PUBLIC_TARGET, color="k", ls="--", lw=1, label="target 95 %")
    axes[1].set_ylim(0, 105)
    axes[1].set_title("recipients reached, %", fontsize=10)
    axes[1].legend(fontsize=8)
    for i, k in enumerate(regions):
        for values, offset, colour in ((k.delays_ms, -0.2, "#555"), (k.ack_ms, 0.2, "#2a9d8f")):
            if values:
                a = np.asarray(values) / 1000
                axes[2].bar(i + offset, np.percentile(a, 99), 0.4, color=colour, alpha=0.35)
                axes[2].bar(i + offset, np.percentile(a, 50), 0.4, color=colour)
    axes[2].set_yscale("symlog", linthresh=1)
    axes[2].set_title("delivery delay (grey), ack time (green), s\np50 solid, p99 light", fontsize=10)
    for ax in axes:
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    fig.suptitle(f"ews warning KPIs, {period.label()}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(kpis: list[RegionKpi], period: Period) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"warning KPIs {period.label()}", title_justify="left")
    cols = ["region", "name", "warnings", "blue", "yellow", "orange", "red", "delivered_pct", "public_pct",
            "warnings_fully_delivered", "delay_p50_s", "delay_p99_s", "ack_p50_s", "ack_p90_s",
            "unacknowledged", "escalations", "failed"]
    for c in cols:
        t.add_column(c.replace("_", " "), justify="left" if c in ("region", "name") else "right")
    for i, k in enumerate(kpis):
        r = k.row()
        public = k.share(public=True)
        cells = [str(r[c]) for c in cols]
        if public is not None and public < PUBLIC_TARGET:
            cells[cols.index("public_pct")] = f"[red]{cells[cols.index('public_pct')]}[/]"
        t.add_row(*cells, end_section=i == len(kpis) - 2)
    Console().print(t)


def run_report(args: argparse.Namespace) -> int:
    from ews.config import load_config

    cfg = load_config(args.config)
    regions = RegionRegistry.load(cfg.registries.regions)
    period = Period.parse(args.start, args.end)
    if args.region is not None and args.region not in regions:
        raise ValueError(f"--region {args.region} is not in the region registry")
    db = Path(cfg.state_dir) / "warnings.sqlite"
    if not db.is_file():
        raise ValueError(f"no warnings database at {db} (state_dir of {args.config})")
    with Store(db) as store:
        kpis = collect(store, regions, period, args.region, args.drill)
    print_table(kpis, period)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out.with_suffix(".csv"), out.with_suffix(".png")
    write_csv(kpis, csv_path, period)
    plot(kpis, png_path, period)
    print(f"wrote {csv_path} and {png_path}")
    return 0

