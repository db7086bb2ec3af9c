"""TLS, per-gateway credentials and region ACLs on a real Mosquitto."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from ews.brokerauth import BrokerClient, acl_lines, password_hash, provision, region_path
from ews.servers import ManagedServer, dev_certificates_dir, mosquitto_secure
from ews.yamlfile import ConfigError

REPO = Path(__file__).resolve().parent.parent
CLIENTS = REPO / "ews" / "sample" / "broker-clients.yaml"


def test_region_path_and_acl() -> None:
    assert region_path("440106") == "440106"
    assert region_path("440106004") == "440106/440106004"
    assert region_path("440106004002") == "440106/440106004/440106004002"
    gw = BrokerClient(id="GW-1", role="gateway", region="440106004")
    assert acl_lines(gw) == ["user GW-1", "topic write ews/440106/440106004/#"]
    with pytest.raises(ValueError):
        BrokerClient(id="GW-2", role="gateway", region="44010")


@pytest.mark.parametrize(("clients", "line", "field", "reason"), [
    # a device id is an ACL line's topic level: a line break would add a line of its own
    ('  - {id: disp, role: consumer, devices: ["x\\ntopic write ews/#"]}\n', 2, "clients[0].devices[0]", "pattern"),
    ('  - {id: disp, role: consumer, devices: ["#"]}\n', 2, "clients[0].devices[0]", "pattern"),  # every device
    ("  - {id: GW-1, role: gateway, region: '440106001'}\n  - {id: GW-1, role: pipeline}\n", 1, "clients",
     "GW-1 appears twice"),
    ("  - {id: GW-1, role: gateway}\n", 2, "clients[0]", "needs the region"),  # was a traceback
])
def test_client_files_that_would_grant_more_than_they_say_are_refused(
        tmp_path: Path, clients: str, line: int, field: str, reason: str) -> None:
    f = tmp_path / "clients.yaml"
    f.write_text("clients:\n" + clients)
    with pytest.raises(ConfigError) as info:
        provision(f, tmp_path / "out")
    assert any(str(p).startswith(f"{f}:{line}: {field}: ") and reason in p.reason for p in info.value.problems), \
        info.value.problems
    assert not (tmp_path / "out").exists()


def test_password_hash_format() -> None:
    h = password_hash("secret", salt=b"0123456789ab", iterations=101)
    assert h.startswith("$7$101$MDEyMzQ1Njc4OWFi$")


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedServer, dict[str, str], Path]]:
    root = Path(tmp_path_factory.mktemp("secure"))
    tls = dev_certificates_dir(root / "tls")
    passwords = provision(CLIENTS, root / "auth")
    broker = mosquitto_secure(root, root / "auth", tls)
    broker.start()
    yield broker, passwords, tls / "ca.pem"
    broker.stop()


def _client(broker: ManagedServer, ca: Path, user: str, password: str) -> tuple[mqtt.Client, list[ReasonCode]]:
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.time_ns()}",
                    protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.username_pw_set(user, password)
    codes: list[ReasonCode] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    deadline = time.monotonic() + 10
    while not codes and time.monotonic() < deadline:
        time.sleep(0.02)
    return c, codes


def _subscribe(c: mqtt.Client, topic: str) -> None:
    """Subscribe and wait for the broker's SUBACK, so nothing published next can be missed."""
    done = threading.Event()
    c.on_subscribe = lambda *_a: done.set()
    c.subscribe(topic, qos=1)
    assert done.wait(10), f"no SUBACK for {topic}"


def _publish_acked(c: mqtt.Client, topic: str, payload: bytes) -> None:
    """Publish at QoS 1 until the broker answers (granted or refused), riding out a reconnect:
    the assertions are on what the subscriber receives, so a retry cannot hide a leak."""
    for _ in range(5):
        try:
            c.publish(topic, payload, qos=1).wait_for_publish(5)
            return
        except (RuntimeError, ValueError):
            time.sleep(0.5)
    raise AssertionError(f"could not publish on {topic}")


def test_gateway_publishes_only_under_its_subtree(secure_broker: tuple[ManagedServer, dict[str, str], Path]) -> None:
    broker, pw, ca = secure_broker
    got: list[str] = []
    lock = threading.Lock()
    pipe, codes = _client(broker, ca, "ews-pipeline-440106", pw["ews-pipeline-440106"])
    assert codes and not codes[0].is_failure

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with lock:
            got.append(m.topic)

    pipe.on_message = on_message
    _subscribe(pipe, "ews/#")

    gw, codes = _client(broker, ca, "GW-440106004", pw["GW-440106004"])
    assert codes and not codes[0].is_failure
    inside = "ews/440106/440106004/440106004002/rain/RG-0004"
    outside = "ews/440106/440106001/440106001004/rain/RG-0001"
    batch_inside = "ews/440106/440106004/batch/GW-440106004"
    batch_outside = "ews/440106/batch/GW-440106004"  # district depth: wider than its street
    for topic in (inside, outside, batch_inside, batch_outside):
        _publish_acked(gw, topic, b'{"ts": 1764300000000, "value": 1.0}')
    deadline = time.monotonic() + 15
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # give a wrongly forwarded message time to show up
    # QoS 1 is at least once: a publish repeated after a reconnect may arrive twice
    assert set(got) == {inside, batch_inside}
    gw.loop_stop()
    pipe.loop_stop()


def test_wrong_password_and_anonymous_are_refused(secure_broker: tuple[ManagedServer, dict[str, str], Path]) -> None:
    broker, pw, ca = secure_broker
    c, codes = _client(broker, ca, "GW-440106004", pw["GW-440106004"] + "x")
    c.loop_stop()
    assert codes and codes[0].is_failure
    c, codes = _client(broker, ca, "nobody", "")
    c.loop_stop()
    assert codes and codes[0].is_failure


def test_plaintext_is_refused(secure_broker: tuple[ManagedServer, dict[str, str], Path]) -> None:
    broker, pw, _ = secure_broker
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv5)
    c.username_pw_set("GW-440106004", pw["GW-440106004"])
    codes: list[ReasonCode] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc)
    try:
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        time.sleep(1.0)
    except OSError:
        pass
    c.loop_stop()
    assert not codes or codes[0].is_failure


def test_oversized_payload_is_not_delivered(secure_broker: tuple[ManagedServer, dict[str, str], Path]) -> None:
    broker, pw, ca = secure_broker
    got: list[int] = []
    pipe, _ = _client(broker, ca, "ews-pipeline-440106", pw["ews-pipeline-440106"])
    pipe.on_message = lambda _c, _u, m: got.append(len(m.payload))
    _subscribe(pipe, "ews/#")
    gw, _ = _client(broker, ca, "GW-440106004", pw["GW-440106004"])
    topic = "ews/440106/440106004/440106004002/rain/RG-0004"
    gw.publish(topic, b"x" * 300_000, qos=1)
    gw.publish(topic, b'{"ts": 1764300000000, "value": 2.0}', qos=1)
    time.sleep(1.5)
    assert all(n < 262_144 for n in got)
    gw.loop_stop()
    pipe.loop_stop()
