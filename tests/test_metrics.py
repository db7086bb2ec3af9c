"""Stage metrics move when the stages work, /metrics serves them, and the Grafana dashboard
only queries metrics that exist, in PromQL that a real Prometheus-compatible server
(VictoriaMetrics) accepts and answers with data."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest

from ews.servers import LocalServers, free_port
from tests.api_env import S01_GAS, Env, make_env
from tests.promql import metric_names, registered

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "ews-dashboard.json"
def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def test_every_dashboard_query_names_a_registered_metric() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 25
    used = set().union(*(metric_names(e) for e in exprs))
    assert used and all(n.startswith("ews_") for n in used), used
    assert used - registered() == set()
    # every stage is on the dashboard
    for prefix in ("ews_ingest_", "ews_rules_", "ews_warnings_", "ews_delivery_", "ews_end_to_end_", "ews_api_"):
        assert any(n.startswith(prefix) for n in used), prefix


@pytest.fixture(scope="module")
def env(servers: LocalServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = make_env(tmp_path_factory.mktemp("metrics"), servers.influx_url, "api_metrics")
    yield e
    e.pipeline.outbox.stop()
    e.close()


def test_stage_metrics_move(env: Env) -> None:
    opened = {"type": "open", "level": "orange"}
    before = {
        "transitions": sample("ews_warnings_transitions_total", opened),
        "issue": sample("ews_warning_issue_lag_seconds_count"),
        "sent": sample("ews_delivery_attempts_total", {"channel": "console", "result": "sent"}),
        "e2e": sample("ews_end_to_end_lag_seconds_count", {"channel": "console"}),
        "api": sample("ews_api_requests_total", {"method": "GET", "route": "/api/v1/warnings", "status": "200"}),
    }
    env.pipeline.outbox.start()
    env.feed(S01_GAS, 31.0)
    assert sample("ews_warnings_transitions_total", opened) == before["transitions"] + 1
    assert sample("ews_warning_issue_lag_seconds_count") == before["issue"] + 1
    assert sample("ews_warnings_open", {"level": "orange"}) == 1
    deadline = time.monotonic() + 15
    while sample("ews_end_to_end_lag_seconds_count", {"channel": "console"}) == before["e2e"]:
        assert time.monotonic() < deadline, "no delivery observed"
        time.sleep(0.05)
    sent = sample("ews_delivery_attempts_total", {"channel": "console", "result": "sent"}) - before["sent"]
    assert sent >= 1
    assert sample("ews_end_to_end_lag_seconds_count", {"channel": "console"}) - before["e2e"] == sent
    env.resolve_all()
    assert sample("ews_warnings_transitions_total", {"type": "resolve", "level": "orange"}) >= 1
    assert sample("ews_warnings_open", {"level": "orange"}) == 0
    # the API counts itself by route template, and serves the whole registry on /metrics
    assert env.client.get("/api/v1/warnings", headers={"Authorization": "Bearer root-admin"}).status_code == 200
    assert sample("ews_api_requests_total", {"method": "GET", "route": "/api/v1/warnings", "status": "200"}) == \
        before["api"] + 1
    text = env.client.get("/metrics").text
    for name in ("ews_warnings_transitions_total", "ews_end_to_end_lag_seconds_bucket", "ews_rules_batch_seconds_count",
                 "ews_ingest_messages_total", "ews_delivery_attempts_total"):
        assert name in text


# --- the dashboard's queries on VictoriaMetrics ---------------------------------------------

@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
    if not Path(binary).exists():  # pragma: no cover - ./run test installs it
        pytest.skip("victoria-metrics is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"-storageDataPath={tmp_path / 'vm'}", f"-httpListenAddr=127.0.0.1:{port}",
         "-search.latencyOffset=0s", "-loggerLevel=ERROR"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "VictoriaMetrics did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def with_timestamp(exposition: str, ts_ms: int) -> str:
    return "".join(f"{line} {ts_ms}\n" for line in exposition.splitlines() if line and not line.startswith("#"))


def test_dashboard_queries_run_on_a_prometheus_compatible_server(env: Env, victoria: str) -> None:
    # two scrapes a minute apart, the second after a warning's whole life, so rates have data
    now = int(time.time() * 1000)
    first = generate_latest(REGISTRY).decode()
    env.feed(S01_GAS, 31.0)
    env.client.get("/api/v1/warnings", headers={"Authorization": "Bearer nobody"})
    env.resolve_all()
    second = generate_latest(REGISTRY).decode()
    for text, ts in ((first, now - 60_000), (second, now)):
        r = httpx.post(f"{victoria}/api/v1/import/prometheus", params={"extra_label": "instance=ews-test"},
                       content=with_timestamp(text, ts))
        assert r.status_code == 204, r.text
    httpx.get(f"{victoria}/internal/force_flush")
    answered: dict[str, int] = {}
    for expr in dashboard_exprs():
        q = expr.replace("$__rate_interval", "2m").replace("$instance", ".*")
        r = httpx.get(f"{victoria}/api/v1/query", params={"query": q, "time": now / 1000 + 1, "nocache": "1"})
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        answered[expr] = len(body["data"]["result"])
    with_data = {e for e, n in answered.items() if n}
    for must in ("ews_warnings_transitions_total", "ews_api_requests_total", "ews_api_denied_total",
                 "ews_warnings_open", "ews_rules_batch_seconds_bucket", "ews_warning_issue_lag_seconds_bucket"):
        assert any(must in e for e in with_data), must
