"""Per-message cost of the delivery channels against loopback receivers.

Each HTTP channel sends N notifications to a local server that answers as its service does;
the baseline, run in the same script against the same server, is a bare httpx POST of the
channel's own request body (so the ratio is the channel's own overhead: building, signing,
checking the reply), so the figures are ratios to it and survive a loaded machine. The CAP
channel (build, chain and store one CAP document) is compared with a bare SQLite insert of a
document of the same size. Prints a table and writes .state/bench/channels.png.

    .venv/bin/python bench/channels.py [-n 300]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import matplotlib
import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ews.config import HttpRequestTemplate
from ews.levels import Level
from ews.regions import RegionFile, RegionRegistry
from notifiers.cap import CapSettings
from notifiers.cap_store import CapStore
from notifiers.channels.alertmanager import AlertmanagerChannel
from notifiers.channels.base import Channel, Notification
from notifiers.channels.cap import CapChannel
from notifiers.channels.dingtalk import DingTalkChannel
from notifiers.channels.feishu import FeishuChannel
from notifiers.channels.sms import SmsChannel
from notifiers.channels.wecom import WeComChannel
from notifiers.publish import warning_json

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REGIONS = RegionRegistry.from_model(RegionFile.model_validate({"districts": [{
    "code": "440106", "name": "天河区", "streets": [{"code": "440106001", "name": "车陂街道", "communities": [
        {"code": "440106001001", "name": "车陂社区"}]}]}]}))


T0_MS = 1_716_337_800_000


@contextmanager
def receiver() -> Iterator[str]:
    """A loopback server answering every request as the robots do on success."""
    ok = json.dumps({"errcode": 0, "code": 0, "errmsg": "ok"}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real services offer
        disable_nagle_algorithm = True  # else delayed ACKs add 40 ms to every reply

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(ok)))
            self.end_headers()
            self.wfile.write(ok)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def notes(n: int) -> list[Notification]:
    out = []
    for i in range(n):
        row: dict[str, Any] = {
            "id": f"W-bench{i:06d}", "rule": "rain-3h", "rule_version": "v1", "subject": "RG-0001",
            "kind": "rain", "community": "440106001001", "level": int(Level.ORANGE),
            "peak_level": int(Level.ORANGE), "state": "open", "measure": "rain_3h", "value": 62.5, "unit": "mm",
            "threshold": 50.0, "opened_event_ts_ms": T0_MS, "opened_ts_ms": T0_MS, "updated_event_ts_ms": T0_MS,
            "updated_ts_ms": T0_MS + i, "drill": False,
            "message": "天河区 车陂街道 车陂社区 暴雨橙色预警：3小时累计雨量 62.5 毫米（2024-05-22 08:30）",
        }
        w = warning_json(row, REGIONS)
        recipient = {"id": "P1", "name": "值班员", "role": "duty_officer", "tier": "community",
                     "region": "440106001001", "audience": "internal", "channels": ["bench"],
                     "phone": "13800000001", "email": None, "wecom": None}
        out.append(Notification(outbox_id=i, idempotency_key=f"{i}:bench", channel="bench", transition="open",
                                transition_id=i, warning=w, recipients=[recipient], message=row["message"]))
    return out


def rekeyed(batch: list[Notification], tag: str) -> list[Notification]:
    return [replace(n, idempotency_key=f"{n.idempotency_key}:{tag}") for n in batch]


def per_message_ms(send: Callable[[Notification], None], batch: list[Notification]) -> float:
    t = time.perf_counter()
    for note in batch:
        send(note)
    return (time.perf_counter() - t) * 1000 / len(batch)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300, help="notifications per channel")
    ap.add_argument("--out", type=Path, default=Path(".state/bench"))
    args = ap.parse_args()
    console = Console()
    batch = notes(args.n)
    rows: list[tuple[str, float, float]] = []  # name, ms/message, baseline ms/message
    with receiver() as url, Progress(console=console) as progress, tempfile.TemporaryDirectory() as tmp:
        task = progress.add_task("channels", total=7)
        http = httpx.Client(timeout=5)
        channels: list[tuple[str, Channel, Callable[[Notification], bytes]]] = []
        wecom = WeComChannel("wecom", f"{url}/wecom?key=k")
        ding = DingTalkChannel("dingtalk", f"{url}/ding", token="t", secret_value="s")
        feishu = FeishuChannel("feishu", f"{url}/feishu", secret_value="s")
        sms = SmsChannel("sms", HttpRequestTemplate(url=f"{url}/sms", body={"to": "{phone}", "text": "{message}"}))
        am = AlertmanagerChannel("am", url)
        channels = [
            ("wecom", wecom, lambda n: orjson.dumps(wecom.payload(n))),
            ("dingtalk (signed)", ding, lambda n: orjson.dumps(ding.payload(n))),
            ("feishu (signed card)", feishu, lambda n: orjson.dumps(feishu.payload(n))),
            ("sms (1 phone)", sms, lambda n: sms.build(n, "13800000001")[3] or b""),
            ("alertmanager", am, lambda n: orjson.dumps(am.alerts(n))),
        ]
        progress.advance(task)
        for name, ch, body_of in channels:
            body = body_of(batch[0])

            def bare_post(note: Notification, body: bytes = body) -> None:
                http.post(f"{url}/bare", content=body, headers={"Content-Type": "application/json"})

            per_message_ms(bare_post, batch[:20])
            per_message_ms(ch.send, rekeyed(batch[:20], "warm"))
            # alternate the two so load from elsewhere on the machine hits both alike; fresh
            # idempotency keys each round, or the SMS channel would skip phones it already sent
            base, cost = [], []
            for r in range(3):
                base.append(per_message_ms(bare_post, batch))
                cost.append(per_message_ms(ch.send, rekeyed(batch, str(r))))
            rows.append((name, statistics.median(cost), statistics.median(base)))
            ch.close()
            progress.advance(task)

        db = sqlite3.connect(Path(tmp) / "bare.sqlite", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, xml BLOB)")
        doc = b"x" * 3000

        def bare_insert(note: Notification) -> None:
            db.execute("INSERT INTO t VALUES (?, ?)", (note.idempotency_key, doc))

        base_db = per_message_ms(bare_insert, batch)
        cap = CapChannel("cap", CapStore(Path(tmp) / "cap.sqlite"),
                         CapSettings(sender="ews@bench.example.cn", sender_name="bench"))
        rows.append(("cap (build+chain+store)", per_message_ms(cap.send, batch), base_db))
        cap.close()
        progress.advance(task)
        http.close()

    table = Table(title=f"channel cost per message, {args.n} messages, loopback receivers")
    for col in ("channel", "ms/message", "baseline ms/message", "ratio to baseline"):
        table.add_column(col, justify="left" if col == "channel" else "right")
    for name, ms, base_ms in rows:
        table.add_row(name, f"{ms:.3f}", f"{base_ms:.3f}", f"{ms / base_ms:.2f}")
    console.print(table)
    console.print("baselines: a bare httpx POST of the same body to the same server (HTTP channels); "
                  "a bare SQLite insert of a 3 kB document (cap)")

    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh([r[0] for r in rows], [r[1] / r[2] for r in rows], color="#d9822b")
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("cost per message / baseline (1 = as cheap as the bare request)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(args.out / "channels.png", dpi=120)
    console.print(f"plot: {args.out / 'channels.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
