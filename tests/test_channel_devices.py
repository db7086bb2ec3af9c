"""Commands to sirens, displays and speakers, received by a real Mosquitto subscriber."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from pydantic import ValidationError

from ews.config import ChannelConfig, sample_dir
from ews.levels import Level
from ews.regions import RegionRegistry
from ews.servers import LocalServers
from notifiers.channels import build_channel
from notifiers.channels.device_registry import Device, DeviceFile, DeviceRegistry
from notifiers.channels.devices import DeviceChannel
from tests.channel_receivers import make_note

pytestmark = pytest.mark.integration

NOW_S = 1_716_337_800.0
REGISTRY = {
    "command_ttl_s": 300,
    "patterns": {"disaster": {"on_s": 15, "off_s": 10, "cycles": 3}},
    "profiles": {
        "siren": {"type": "siren", "levels": {"orange": {"pattern": "disaster"}, "red": {"pattern": "disaster"}}},
        "led": {"type": "display", "levels": {"blue": {}, "yellow": {}, "orange": {"flash": True},
                                              "red": {"flash": True}}},
        "speaker": {"type": "speaker", "levels": {"yellow": {}, "red": {"repeat": 3}}},
    },
    "devices": [
        {"id": "SIREN-A", "name": "车陂街道警报器", "profile": "siren", "serves": ["440106001"]},
        {"id": "LED-A1", "name": "车陂社区显示屏", "profile": "led", "serves": ["440106001001"]},
        {"id": "LED-B1", "name": "棠下社区显示屏", "profile": "led", "serves": ["440106002001"]},
        {"id": "SPK-A1", "name": "车陂社区大喇叭", "profile": "speaker", "serves": ["440106001001"]},
    ],
}


class Subscriber:
    def __init__(self, port: int):
        self.messages: list[tuple[str, dict[str, Any], int | None]] = []
        self.cond = threading.Condition()
        ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="test-device-sub", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe("ews-out/devices/#", qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10), "subscription not confirmed"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        expiry = getattr(msg.properties, "MessageExpiryInterval", None)
        with self.cond:
            self.messages.append((msg.topic, orjson.loads(msg.payload), expiry))
            self.cond.notify_all()

    def wait_count(self, n: int, timeout_s: float = 10.0) -> list[tuple[str, dict[str, Any], int | None]]:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while len(self.messages) < n and time.monotonic() < deadline:
                self.cond.wait(0.1)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(servers: LocalServers) -> Iterator[Subscriber]:
    s = Subscriber(servers.mqtt.port)
    try:
        yield s
    finally:
        s.close()


def test_commands_follow_the_warning_through_its_lifecycle(
    servers: LocalServers, subscriber: Subscriber, mini_regions: RegionRegistry,
) -> None:
    ch = DeviceChannel("dev", DeviceRegistry(DeviceFile.model_validate(REGISTRY)), port=servers.mqtt.port,
                       clock=lambda: NOW_S)
    steps = [("open", Level.YELLOW, Level.YELLOW), ("raise", Level.RED, Level.RED),
             ("lower", Level.YELLOW, Level.RED), ("resolve", Level.YELLOW, Level.RED)]
    for tid, (transition, level, peak) in enumerate(steps, start=1):
        ch.send(make_note(mini_regions, transition=transition, transition_id=tid, channel="dev", level=level,
                          peak=peak, community="440106001001", drill=(tid == 2)))
    # a retry of an accepted notification publishes nothing again
    ch.send(make_note(mini_regions, transition="resolve", transition_id=4, channel="dev", level=Level.YELLOW,
                      peak=Level.RED))
    ch.close()

    expected = [
        # open yellow: the siren stays silent below orange; the other street's display hears nothing
        ("LED-A1", "activate", "1:dev"), ("SPK-A1", "activate", "1:dev"),
        # raise to red: everything sounds
        ("SIREN-A", "activate", "2:dev"), ("LED-A1", "activate", "2:dev"), ("SPK-A1", "activate", "2:dev"),
        # lower to yellow: the siren has no yellow command, so it is told to stop
        ("SIREN-A", "clear", "3:dev"), ("LED-A1", "activate", "3:dev"), ("SPK-A1", "activate", "3:dev"),
        # lifted: every device that may show it drops it
        ("SIREN-A", "clear", "4:dev"), ("LED-A1", "clear", "4:dev"), ("SPK-A1", "clear", "4:dev"),
    ]
    got = subscriber.wait_count(len(expected))
    assert [(p["device"], p["command"], p["idempotency_key"].split("/")[0]) for _, p, _ in got] == expected
    assert all(topic == f"ews-out/devices/{p['device']}" for topic, p, _ in got)
    assert all(p["idempotency_key"] == f"{p['idempotency_key'].split('/')[0]}/{p['device']}" for _, p, _ in got)

    by = {(p["device"], p["idempotency_key"].split("/")[0]): (p, exp) for _, p, exp in got}
    siren, expiry = by[("SIREN-A", "2:dev")]
    assert siren["siren"] == {"pattern": "disaster", "on_s": 15.0, "off_s": 10.0, "cycles": 3}
    assert siren["level"] == "red" and siren["drill"] is True and siren["warning_id"] == "W-0123456789"
    assert siren["expires_ts_ms"] == int(NOW_S * 1000) + 300_000
    assert siren["expires_ts"] == "2024-05-22T08:35:00.000+08:00"
    assert expiry is not None and 0 < expiry <= 300  # the broker counts down the MQTT 5 expiry
    led, _ = by[("LED-A1", "1:dev")]
    assert led["display"] == {"colour": "yellow", "flash": False}
    assert led["text"] == "暴雨黄色预警 车陂社区：3小时累计雨量62.5 毫米"
    assert by[("LED-A1", "2:dev")][0]["display"] == {"colour": "red", "flash": True}
    assert by[("LED-A1", "4:dev")][0]["text"] == "车陂社区暴雨预警已解除"
    assert by[("SPK-A1", "2:dev")][0]["speaker"] == {"repeat": 3}
    assert by[("SPK-A1", "2:dev")][0]["text"].startswith("天河区 车陂街道 车陂社区 暴雨橙色预警")


def test_sample_registry_and_config(servers: LocalServers, tmp_path: Path) -> None:
    reg = DeviceRegistry.load(sample_dir() / "devices.yaml")
    assert [d.id for d in reg.serving("440106004201")] == ["SIREN-440106004-01", "SPK-440106004201-01"]
    ch = build_channel(ChannelConfig(name="dev", type="devices", url=f"mqtt://127.0.0.1:{servers.mqtt.port}",
                                     devices=sample_dir() / "devices.yaml"))
    assert isinstance(ch, DeviceChannel) and ch.ttl_s == 600
    ch.close()
    bad = tmp_path / "devices.yaml"
    bad.write_text("profiles: {}\ndevices:\n  - {id: 'A B', name: x, profile: p, serves: ['4401']}\n")
    with pytest.raises(Exception, match=r"devices\.yaml:3"):
        DeviceRegistry.load(bad)


def test_broker_down_is_retryable(mini_regions: RegionRegistry) -> None:
    from ews.servers import free_port
    from notifiers.channels.base import DeliveryError

    ch = DeviceChannel("dev", DeviceRegistry(DeviceFile.model_validate(REGISTRY)), port=free_port(), timeout_s=0.5)
    with pytest.raises(DeliveryError) as err:
        ch.send(make_note(mini_regions, level=Level.RED))
    ch.close()
    assert err.value.retryable is True


@pytest.mark.parametrize(("field", "value"), [("id", "LED-1\n"), ("serves", ["440106\n"])])
def test_device_ids_and_codes_ending_in_a_newline_are_refused(field: str, value: object) -> None:
    """`$` also matches before a final newline: the id would put one into the device's topic,
    the code would serve no community at all."""
    doc = {"id": "LED-1", "name": "路口屏", "profile": "led", "serves": ["440106"], field: value}
    with pytest.raises(ValidationError):
        Device.model_validate(doc)
