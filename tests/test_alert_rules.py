"""The shipped Prometheus alert rules (deploy/prometheus/): valid for Debian's Prometheus, each
alert unit-tested by promtool firing and quiet, every series and label they read exposed by the
pipeline, and, end to end, a real pipeline's faults raising them in a real Prometheus that
hands them to a real Alertmanager on the duty engineer's route."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml

from ews import metrics
from ews.config import InfluxConfig, MqttConfig, RegistryConfig, sample_dir
from ews.servers import (
    AlertmanagerServer,
    LocalServers,
    PrometheusServer,
    free_port,
    prometheus,
)
from ingest.collector import Collector
from ingest.influx_v1 import InfluxV1
from ingest.process import MessageProcessor
from ingest.reasons import Reason
from ingest.refusal import CAUSES
from ingest.sink import Sink
from ingest.spool import Spool
from notifiers.outbox import OutboxWorker
from notifiers.routing import DEFAULT_POLICY
from rules.loader import DEFAULTS_DIR

from .channel_receivers import am_alerts
from .pipelineproc import PipelineRun
from .promql import label_names, labels_of, metric_names, registered
from .waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SHIPPED = DEPLOY / "prometheus"
RULES = SHIPPED / "ews-alerts.yml"
UNIT_TESTS = SHIPPED / "ews-alerts.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=SHIPPED)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_config_and_rules_are_valid_for_prometheus() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_unit_tests_pass() -> None:
    out = promtool("test", "rules", UNIT_TESTS.name)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    cases = [c for t in yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))["tests"]
             for c in t.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names)) >= 15
    assert set(names) - fired == set(), "alerts never shown firing"
    assert set(names) - quiet == set(), "alerts never shown quiet"
    for c in cases:
        for a in c["exp_alerts"]:  # what the engineer reads is checked, not left out
            assert set(a["exp_annotations"]) == {"summary", "description"}, c


def test_alerts_are_critical_or_warning_with_chinese_messages() -> None:
    """The hazard warnings own blue..red in Alertmanager; these must not match their routes."""
    for r in alert_rules():
        assert r["alert"].startswith("Ews") and r["alert"] != "EwsWarning", r["alert"]
        assert r["labels"] == {"severity": r["labels"]["severity"]} and r["labels"]["severity"] in (
            "critical", "warning"), r["alert"]
        assert set(r["annotations"]) == {"summary", "description"}, r["alert"]
        for text in r["annotations"].values():
            assert re.search(r"[\u4e00-\u9fff]", text), (r["alert"], text)


def test_rules_read_only_what_the_pipeline_exposes() -> None:
    known = registered()
    for r in alert_rules():
        expr = r["expr"]
        series = metric_names(expr)
        assert series - known - {"up"} == set(), (r["alert"], series - known)
        ews_series = series & known
        allowed = {"job", "instance"} | set().union(*(labels_of(s) for s in ews_series))
        used = label_names(expr) | set(re.findall(r"\$labels\.(\w+)", str(r["annotations"])))
        assert used <= allowed, (r["alert"], used - allowed)


def amtool_route(config: Path, **labels: str) -> str:
    out = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={config}",
                          *(f"{k}={v}" for k, v in labels.items())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("config", ["alertmanager/alertmanager.yml", "compose/alertmanager.yml"])
def test_alertmanager_routes_these_alerts_apart_from_the_warnings(config: str) -> None:
    path = DEPLOY / config
    for r in alert_rules():
        assert amtool_route(path, alertname=r["alert"], severity=r["labels"]["severity"], instance="ews:9108") \
            == "ews-ops", r["alert"]
    for level in ("blue", "yellow", "orange", "red"):
        assert amtool_route(path, alertname="EwsWarning", severity=level, district="440106") != "ews-ops"


def test_compose_prometheus_is_the_shipped_one_on_the_services_names() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    conf_file = DEPLOY / "compose" / "prometheus.yml"
    out = promtool("check", "config", "--syntax-only", str(conf_file))
    assert out.returncode == 0, out.stdout + out.stderr
    conf, shipped = (yaml.safe_load(f.read_text()) for f in (conf_file, SHIPPED / "prometheus.yml"))

    def targets(c: dict[str, Any]) -> tuple[list[str], list[str]]:
        (job,) = [j for j in c["scrape_configs"] if j["job_name"] == "ews"]
        am = c["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
        return job["static_configs"][0]["targets"], am

    assert targets(conf) == (["ews:9108"], ["alertmanager:9093"])
    assert "9108:9108" in compose["services"]["ews"]["ports"] and "alertmanager" in compose["services"]
    for c in (conf, shipped):  # apart from the addresses, the same file
        for j in c["scrape_configs"]:
            j.pop("static_configs")
        c.pop("alerting")
    assert conf == shipped
    mounts = {dest: src for src, dest, *_ in (v.split(":") for v in compose["services"]["prometheus"]["volumes"])}
    for f in conf["rule_files"]:
        assert (DEPLOY / "compose" / mounts[f"/etc/prometheus/{f}"]).resolve() == RULES


def exposed(name: str, labels: dict[str, str]) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def test_labelled_counters_alerted_on_are_exposed_at_zero_before_their_first_event(tmp_path: Path) -> None:
    """`increase()` sees nothing in a series whose first sample is already 1: each counter an
    alert takes the increase of is there at 0 as soon as its target, channel or stage exists."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, target="t-zero")
    assert exposed("ews_spool_quarantine_dropped_readings_total", {"target": "t-zero"}) == 0
    Sink(writer=None, spool=spool, stop=None)  # type: ignore[arg-type]  (only its metrics are read)
    for cause in CAUSES:
        assert exposed("ews_influx_refused_points_total", {"target": "t-zero", "cause": cause}) == 0
    OutboxWorker(store=None, channels={"t-zero-sms": None})  # type: ignore[arg-type, dict-item]
    for result in ("sent", "failed"):
        assert exposed("ews_delivery_attempts_total", {"channel": "t-zero-sms", "result": result}) == 0
    assert exposed("ews_delivery_given_up_total", {"channel": "t-zero-sms"}) == 0
    reg = RegistryConfig.sample().load()
    Collector(MqttConfig(port=1, client_id="t-zero"), InfluxConfig(url="http://127.0.0.1:1", database="t_zero"),
              MessageProcessor(reg.sensors, reg.regions), spool_dir=tmp_path / "collector-spool")
    for reason in Reason:
        assert exposed("ews_ingest_rejected_total", {"reason": reason.value}) is not None
    # stages and reload results are fixed in the code: every one it counts under is there
    code = "\n".join(p.read_text() for d in ("ews", "ingest", "rules", "notifiers") for p in (REPO / d).rglob("*.py"))
    stages = set(re.findall(r'PIPELINE_ERRORS\.labels\("([^"]+)"\)', code))
    assert stages and stages <= set(metrics.PIPELINE_STAGES)
    results = set(re.findall(r'RULES_RELOADS\.labels\("([^"]+)"\)', code))
    assert results == {"ok", "refused"}
    for stage in stages:
        assert exposed("ews_pipeline_errors_total", {"stage": stage}) is not None
    for result in results:
        assert exposed("ews_rules_reloads_total", {"result": result}) is not None


# ---- end to end: a real pipeline, Prometheus and Alertmanager ----

def prom_query(prom: PrometheusServer, q: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prom.url}/api/v1/query", params={"query": q}, timeout=5).json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def prom_alert_states(prom: PrometheusServer) -> dict[str, str]:
    body = httpx.get(f"{prom.url}/api/v1/alerts", timeout=5).json()
    return {a["labels"]["alertname"]: a["state"] for a in body["data"]["alerts"]}


@pytest.mark.integration
@pytest.mark.slow
def test_pipeline_faults_reach_alertmanager_through_prometheus(
    own_servers: LocalServers, am: AlertmanagerServer, tmp_path: Path,
) -> None:
    influx_url = own_servers.influx_url
    rules_dir = tmp_path / "rules"
    shutil.copytree(DEFAULTS_DIR, rules_dir)
    sensors = RegistryConfig.sample().load().sensors
    rain = sensors.of_kind("rain")[0]
    where = f"ews/{rain.district}/{rain.street}/{rain.community}/rain"
    # InfluxDB already holds `unregistered` readings with a string field: it refuses ours
    now_ms = int(time.time() * 1000)
    db = InfluxV1(influx_url, "alerts")
    try:
        db.create_database()
        db.write(f'unregistered,sensor=OLD value="n/a" {now_ms}\n'.encode())
    finally:
        db.close()
    # its only channel is the console: the public feed of the default policy would be unreachable,
    # which EwsRecipientsUnreachable would rightly say
    routing = tmp_path / "routing.yaml"
    policy = DEFAULT_POLICY.read_text(encoding="utf-8")
    routing.write_text(policy.replace("    - {audience: public, channels: [webhook]}\n", ""), encoding="utf-8")
    assert routing.read_text(encoding="utf-8") != policy
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({
        "mqtt": {"port": own_servers.mqtt.port, "client_id": "alerts-pipeline", "subscriptions": ["ews/440106/#"]},
        "influxdb": {"url": influx_url, "database": "alerts", "write_deadline_s": 1.0},
        "ingest": {"unknown_sensor": "store", "spool_max_bytes": 1 << 20, "spool_warn_fraction": 0.002},
        "registries": {"regions": str(sample_dir() / "regions.yaml"), "sensors": str(sample_dir() / "sensors.yaml")},
        "state_dir": str(tmp_path / "state"),
        "rules": str(rules_dir),
        "rules_profile": "guangdong",
        "notifiers": {"routing": str(routing)},
    }))
    metrics_port = free_port()
    run = PipelineRun(cfg, tmp_path / "pipeline.log", args=["--metrics-port", str(metrics_port)])
    target = f"127.0.0.1:{metrics_port}"
    prom = prometheus(tmp_path / "prom", [target], f"127.0.0.1:{am.port}")
    prom.start()
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="alerts-pub")
    pub.connect("127.0.0.1", own_servers.mqtt.port)
    pub.loop_start()
    try:
        # Prometheus has seen the refusal counter at 0 before the first refusal
        assert wait_for(lambda: [s["value"][1] for s in prom_query(
            prom, 'ews_influx_refused_points_total{target="main", cause="type_conflict"}')] == ["0"], 30)
        # a healthy pipeline raises nothing (EwsPipelineAbsent is pending until the first scrape)
        assert wait_for(lambda: prom_alert_states(prom) == {}, 15), prom_alert_states(prom)

        pub.publish(f"{where}/UNREG-1", orjson.dumps({"ts": now_ms, "value": 1.5}), qos=1).wait_for_publish(10)
        assert wait_for(lambda: am_alerts(am, alertname="EwsPointsRefused"), 30), prom_alert_states(prom)
        (refused,) = am_alerts(am, alertname="EwsPointsRefused")
        assert refused["labels"] == {"alertname": "EwsPointsRefused", "severity": "warning", "job": "ews",
                                     "instance": target, "target": "main", "cause": "type_conflict"}
        assert "type_conflict" in refused["annotations"]["summary"]
        assert [r["name"] for r in refused["receivers"]] == ["ews-ops"]

        own_servers.influx.stop()  # InfluxDB down: readings go to the spool, past its warning level
        for k in range(40):
            pub.publish(f"{where}/{rain.id}", orjson.dumps({"ts": now_ms + 1000 * (k + 1), "value": 0.5}),
                        qos=1).wait_for_publish(10)
        assert wait_for(lambda: am_alerts(am, alertname="EwsSpoolFilling"), 30), prom_alert_states(prom)
        (filling,) = am_alerts(am, alertname="EwsSpoolFilling")
        assert filling["labels"]["severity"] == "critical" and filling["labels"]["target"] == "main"
        assert [r["name"] for r in filling["receivers"]] == ["ews-ops"]
        assert wait_for(lambda: prom_alert_states(prom).get("EwsSpoolHoldingReadings") == "pending", 15)
        assert "EwsSpoolFull" not in prom_alert_states(prom)

        (rules_dir / "broken.yaml").write_text("rules:\n  - id: [unclosed\n")
        assert wait_for(lambda: prom_alert_states(prom).get("EwsRuleFilesBroken") == "pending", 20)
        assert prom_query(prom, "ews_rules_file_problems")[0]["value"][1] != "0"

        run.kill()
        assert wait_for(lambda: prom_alert_states(prom).get("EwsPipelineDown") == "pending", 20)
    finally:
        pub.loop_stop()
        pub.disconnect()
        prom.stop()
        run.stop()
