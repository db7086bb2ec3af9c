"""The collector's subscription: started means subscribed, and a filter the broker refuses is
reported, not silently missing.

A broker routes a message to the subscriptions it has when the message arrives. A collector
that called itself started on the CONNACK, before the broker had its SUBSCRIBE, lost to the
new session what was published in between (seen under load in the suite). A refused filter
shows only in the SUBACK: the connection stays up and nothing under the filter ever arrives.
Mosquitto's ACL file never refuses a subscription (it filters deliveries instead); its
dynamic security plugin, shipped in Debian's package, does, as EMQX and HiveMQ do."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY

import simulators.inflightproxy as inflightproxy
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.servers import LocalServers, ManagedServer, mosquitto

from .conftest import COMM_B1, STREET_A, STREET_B
from .test_ingest_window import _collector, _publish
from .waiting import wait_for

pytestmark = pytest.mark.integration
SUBSCRIBE = 8
NOW = int(time.time() * 1000)


def _refused() -> float:
    return REGISTRY.get_sample_value("ews_mqtt_subscriptions_refused") or 0.0


def test_start_returns_once_the_broker_has_the_subscription(
    servers: LocalServers, influx_db: str, mini_sensors: SensorRegistry, mini_regions: RegionRegistry,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SUBSCRIBE is held back on its way to the broker, as on a loaded host: a reading
    published as soon as start() returns must still reach the collector's new session."""
    forward = inflightproxy._Session._from_client

    def slow_subscribe(self: inflightproxy._Session, pkts: list[bytes]) -> None:
        if any(p[0] >> 4 == SUBSCRIBE for p in pkts):
            time.sleep(1.0)
        forward(self, pkts)

    monkeypatch.setattr(inflightproxy._Session, "_from_client", slow_subscribe)
    proxy = inflightproxy.InflightProxy(servers.mqtt.port, 65535)
    col = _collector(proxy.port, f"test-sub-{time.time_ns()}", servers.influx_url, influx_db, mini_sensors,
                     mini_regions, tmp_path / "spool")
    col.start()
    try:
        _publish(servers.mqtt.port, f"test-sub-pub-{time.time_ns()}", 1, NOW)
        assert wait_for(lambda: col.stats["messages"] == 1 and col.pending == 0, timeout=10)
        assert col.subscribed
    finally:
        col.stop()
        proxy.stop()


def _dynsec_broker(tmp_path: Path, allowed: str) -> ManagedServer:
    """Mosquitto with its dynamic security plugin: anonymous clients may subscribe under
    `allowed` only."""
    plugin = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
    if not plugin.exists():
        found = sorted(Path("/usr/lib").glob("**/mosquitto_dynamic_security.so"))
        if not found:
            pytest.fail("Mosquitto's dynamic security plugin is missing (Debian's mosquitto package ships it)")
        plugin = found[0]
    broker = mosquitto(tmp_path)
    conf = broker.data_dir / "mosquitto.conf"
    dynsec = broker.data_dir / "dynamic-security.json"
    dynsec.write_bytes(orjson.dumps({
        "defaultACLAccess": {"publishClientSend": True, "publishClientReceive": True, "subscribe": False,
                             "unsubscribe": True},
        "clients": [],
        "groups": [{"groupname": "anonymous", "roles": [{"rolename": "street"}], "clients": []}],
        "roles": [{"rolename": "street", "acls": [
            {"acltype": "subscribePattern", "topic": allowed, "priority": 0, "allow": True}]}],
        "anonymousGroup": "anonymous",
    }))
    conf.write_text(conf.read_text() + f"plugin {plugin}\nplugin_opt_config_file {dynsec}\n")
    broker.start()
    return broker


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_refused_subscription_is_reported_and_the_rest_flows(
    servers: LocalServers, influx_db: str, mini_sensors: SensorRegistry, mini_regions: RegionRegistry,
    tmp_path: Path, caplog: pytest.LogCaptureFixture, protocol: str,
) -> None:
    allowed, denied = f"ews/440106/{STREET_A}/#", f"ews/440106/{STREET_B}/#"
    broker = _dynsec_broker(tmp_path, allowed)
    try:
        col = _collector(broker.port, f"test-sub-refused-{protocol}", servers.influx_url, influx_db, mini_sensors,
                         mini_regions, tmp_path / "spool", protocol=protocol, subscriptions=[allowed, denied])
        try:
            with caplog.at_level(logging.ERROR, logger="ingest.collector"):
                col.start()
                assert col.subscribed  # answered, if not wholly granted: the collector runs on what it has
            assert _refused() == 1
            errors = [r.getMessage() for r in caplog.records if "refused the subscription" in r.getMessage()]
            assert len(errors) == 1 and denied in errors[0] and allowed not in errors[0]
            _publish(broker.port, f"test-sub-pub-a-{protocol}", 1, NOW)  # RG-A1, under the granted filter
            _publish(broker.port, f"test-sub-pub-b-{protocol}", 1, NOW, f"ews/440106/{STREET_B}/{COMM_B1}/rain/RG-B1")
            assert wait_for(lambda: col.stats["messages"] >= 1 and col.pending == 0, timeout=10)
            time.sleep(0.3)  # a reading under the refused filter would show up now
            assert col.stats["messages"] == 1
        finally:
            col.stop()
    finally:
        broker.stop()
    granted = _collector(servers.mqtt.port, f"test-sub-granted-{protocol}", servers.influx_url, influx_db,
                         mini_sensors, mini_regions, tmp_path / "spool2", protocol=protocol)
    granted.start()
    try:
        assert granted.subscribed and _refused() == 0  # a connection with all filters granted clears it
    finally:
        granted.stop()
