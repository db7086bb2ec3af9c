"""The live event stream over a real HTTP server: transitions and acknowledgements arrive as
server-sent events, only those in the token's region."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ews.api.server import ApiServer
from ews.servers import LocalServers
from tests.api_env import S01_GAS, S02_GAS, Env, auth, make_env

pytestmark = pytest.mark.integration


@pytest.fixture
def served(servers: LocalServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str]]:
    e = make_env(tmp_path_factory.mktemp("events"), servers.influx_url, "api_events")
    srv = ApiServer.for_app(e.app)
    srv.start()
    try:
        yield e, srv.url
    finally:
        srv.stop()
        e.pipeline.store.close()


def listen(url: str, token: str, out: queue.Queue[tuple[str, dict[str, Any]]], stop: threading.Event) -> None:
    with httpx.stream("GET", f"{url}/api/v1/events", headers=auth(token), timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                out.put((event, json.loads(line[5:])))
            if stop.is_set():
                return


def test_events_in_region_only(served: tuple[Env, str]) -> None:
    env, url = served
    got: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    stop = threading.Event()
    t = threading.Thread(target=listen, args=(url, "s01-duty", got, stop), daemon=True)
    t.start()
    event, hello = got.get(timeout=10)
    assert event == "hello" and hello["principal"]["region"] == "440106001"
    # one warning in the other street, then one in this street: only the second arrives
    env.feed(S02_GAS, 60.0)
    env.feed(S01_GAS, 31.0)
    event, data = got.get(timeout=10)
    assert (event, data["type"], data["warning"]["subject"], data["warning"]["level"]) == \
        ("transition", "open", S01_GAS, "orange")
    wid = data["warning"]["id"]
    r = httpx.post(f"{url}/api/v1/warnings/{wid}/acknowledge", headers=auth("s01-duty"), json={"comment": "ok"})
    assert r.status_code == 200
    event, data = got.get(timeout=10)
    assert event == "acknowledged" and data["by"] == "s01-duty" and data["warning"]["acknowledged"] is True
    env.resolve_all()
    event, data = got.get(timeout=10)
    assert (event, data["type"], data["warning"]["id"], data["warning"]["state"]) == \
        ("transition", "resolve", wid, "resolved")
    stop.set()
    assert got.empty()  # the other street's open and resolve never came
    missing = httpx.get(f"{url}/api/v1/events")
    assert missing.status_code == 401
