"""Test helpers for the channel tests: a recording HTTP server, realistic notifications, and
what a real Alertmanager holds."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.servers import AlertmanagerServer
from notifiers.channels.base import Notification
from notifiers.publish import warning_json

from .httpstub import HttpStub, QuietHandler


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, dict[str, Any] | str]
Responder = Callable[[Request], Reply]


@dataclass
class Recorder:
    url: str
    requests: list[Request] = field(default_factory=list)
    respond: Responder = lambda req: (200, {"errcode": 0, "errmsg": "ok"})


@contextmanager
def recording_server(respond: Responder | None = None) -> Iterator[Recorder]:
    """A loopback HTTP server that records every request and answers with `respond`."""
    rec = Recorder(url="")
    if respond is not None:
        rec.respond = respond
    lock = threading.Lock()

    class Handler(QuietHandler):
        def _handle(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            u = urlsplit(self.path)
            req = Request(self.command, u.path, parse_qs(u.query, keep_blank_values=True),
                          {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n))
            with lock:
                rec.requests.append(req)
            code, body = rec.respond(req)
            raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_POST = do_GET = do_PUT = _handle

    with HttpStub(Handler) as stub:
        rec.url = stub.url
        yield rec


T0_MS = 1_716_337_800_000  # 2024-05-22 08:30:00 +08:00, the "5.22" storm's morning


def warning_row(
    *, wid: str = "W-0123456789", subject: str = "RG-A1", community: str = "440106001001",
    kind: str = "rain", level: Level = Level.ORANGE, peak: Level | None = None, state: str = "open",
    drill: bool = False, value: float = 62.5, measure: str = "rain_3h", unit: str = "mm",
    updated_ms: int = T0_MS, message: str = "天河区 车陂街道 车陂社区 暴雨橙色预警：3小时累计雨量 62.5 毫米",
) -> dict[str, Any]:
    """A stored warning row as the lifecycle writes it."""
    return {
        "id": wid, "rule": f"{kind}-rule", "rule_name": "", "rule_version": "v1", "subject": subject,
        "kind": kind, "community": community, "street": community[:9], "district": community[:6],
        "level": int(level), "peak_level": int(peak if peak is not None else level), "state": state,
        "measure": measure, "value": value, "unit": unit, "threshold": 50.0,
        "opened_event_ts_ms": T0_MS - 60_000, "opened_ts_ms": T0_MS - 59_000,
        "updated_event_ts_ms": updated_ms - 1_000, "updated_ts_ms": updated_ms,
        "resolved_ts_ms": updated_ms if state == "resolved" else None, "drill": drill, "message": message,
    }


def make_note(
    regions: RegionRegistry, sensors: SensorRegistry | None = None, *, transition: str = "open",
    transition_id: int = 7, channel: str = "ch", recipients: list[dict[str, Any]] | None = None,
    **row: Any,
) -> Notification:
    w = warning_row(**row)
    return Notification(
        outbox_id=transition_id, idempotency_key=f"{transition_id}:{channel}", channel=channel,
        transition=transition, transition_id=transition_id, warning=warning_json(w, regions, sensors),
        recipients=recipients if recipients is not None else [], message=w["message"],
    )


def person(pid: str, *, phone: str | None = None, email: str | None = None, name: str = "值班员",
           wecom: str | None = None) -> dict[str, Any]:
    return {"id": pid, "name": name, "role": "duty_officer", "tier": "community", "region": "440106001001",
            "audience": "internal", "channels": ["ch"], "phone": phone, "email": email, "wecom": wecom}


def am_alerts(am: AlertmanagerServer, **labels: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds with these label values."""
    matchers = [f'{k}="{v}"' for k, v in labels.items()]
    r = httpx.get(f"{am.url}/api/v2/alerts", params={"filter": matchers}, timeout=5)
    r.raise_for_status()
    return list(r.json())
