"""Shared fixtures: a small hand-built district, and real Mosquitto + InfluxDB for the session."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from ews.regions import RegionFile, RegionRegistry
from ews.sensors import Sensor, SensorRegistry
from ews.servers import (
    AlertmanagerServer,
    LocalServers,
    VictoriaServer,
    alertmanager,
    influxdb,
    local_servers,
    mosquitto,
    victoria_metrics,
)

DISTRICT, STREET_A, STREET_B = "440106", "440106001", "440106002"
COMM_A1, COMM_A2, COMM_B1 = "440106001001", "440106001002", "440106002001"
LOCAL = ["duty_officer", "grid_staff"]


def _contacts(code: str, roles: list[str]) -> list[dict[str, object]]:
    return [{"id": f"{role}-{code}", "name": f"{role} of {code}", "role": role} for role in roles]


@pytest.fixture(scope="session")
def mini_regions() -> RegionRegistry:
    doc = {
        "districts": [{
            "code": DISTRICT, "name": "天河区", "contacts": _contacts(DISTRICT, ["duty_officer", "leader"]),
            "streets": [
                {"code": STREET_A, "name": "车陂街道", "contacts": _contacts(STREET_A, ["duty_officer", "leader"]),
                 "communities": [
                     {"code": COMM_A1, "name": "车陂社区", "contacts": _contacts(COMM_A1, LOCAL)},
                     {"code": COMM_A2, "name": "东圃社区", "contacts": _contacts(COMM_A2, LOCAL)},
                 ]},
                {"code": STREET_B, "name": "棠下街道", "contacts": _contacts(STREET_B, ["duty_officer"]),
                 "communities": [
                     {"code": COMM_B1, "name": "棠下社区", "contacts": _contacts(COMM_B1, ["duty_officer"])},
                 ]},
            ],
        }]
    }
    return RegionRegistry.from_model(RegionFile.model_validate(doc))


@pytest.fixture(scope="session")
def mini_sensors() -> SensorRegistry:
    return SensorRegistry([
        Sensor(id="RG-A1", kind="rain", community=COMM_A1, lat=23.12, lon=113.40),
        Sensor(id="RG-A2", kind="rain", community=COMM_A2, lat=23.13, lon=113.41),
        Sensor(id="RG-B1", kind="rain", community=COMM_B1, lat=23.14, lon=113.38),
        Sensor(id="WL-A1", kind="water_level", community=COMM_A1, lat=23.12, lon=113.40,
               params={"warning_level": 5.0, "guarantee_level": 6.0, "historical_max": 6.8}),
        Sensor(id="PD-A1", kind="ponding", community=COMM_A1, lat=23.12, lon=113.40),
        Sensor(id="GS-B1", kind="gas", community=COMM_B1, lat=23.14, lon=113.38),
        Sensor(id="SM-B1", kind="smoke", community=COMM_B1, lat=23.14, lon=113.38),
    ])


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServers]:
    """Real Mosquitto and InfluxDB on free loopback ports for the whole session."""
    with local_servers(Path(tmp_path_factory.mktemp("servers"))) as s:
        yield s


@pytest.fixture
def own_servers(tmp_path: Path) -> Iterator[LocalServers]:
    """Mosquitto and InfluxDB of one test alone, for tests that stop, restart or wipe them."""
    s = LocalServers(mosquitto(tmp_path / "srv"), influxdb(tmp_path / "srv"))
    s.mqtt.start()
    s.influx.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def am(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerServer]:
    """A real Alertmanager on the shipped configuration, for one test module."""
    server = alertmanager(Path(tmp_path_factory.mktemp("am")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


_db_counter = itertools.count()


@pytest.fixture
def influx_db(servers: LocalServers) -> str:
    """A fresh database name per test, so counts are the test's own."""
    return f"test_{next(_db_counter)}"


VICTORIA_USER, VICTORIA_PASSWORD = "ews-writer", "vm-test-secret"


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaServer]:
    """VictoriaMetrics (InfluxDB v1 and v2 write APIs) requiring HTTP basic auth, for the session."""
    vm = victoria_metrics(Path(tmp_path_factory.mktemp("victoria")), username=VICTORIA_USER,
                          password=VICTORIA_PASSWORD)
    vm.start()
    try:
        yield vm
    finally:
        vm.stop()
