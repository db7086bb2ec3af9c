"""The collector's MQTT client reading its socket in chunks (ingest/mqttclient.py).

Packets are handed to paho from a buffer read up to 64 KB at a time: every packet must come
out whole wherever a chunk ends, under MQTT 3.1.1 and 5 (small packets by the thousand,
packets larger than a chunk, TLS records), the buffer must be empty whenever control goes
back to `select()` (which cannot see it), and bytes left from a connection that closed must
never be read as the next one's.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ews.brokerauth import provision
from ews.config import MqttConfig, MqttTls
from ews.servers import LocalServers, ManagedServer, dev_certificates_dir, mosquitto_secure
from ingest import mqttclient
from ingest.mqttclient import READ_CHUNK, ack_many, make_client

from .waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
Received = tuple[bytes, bytes, int]  # topic, payload, packet id


def varint(n: int) -> bytes:
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: bytes, payload: bytes, mid: int, qos: int = 1, flags: int = 0,
                   props: bytes | None = None) -> bytes:
    """A PUBLISH as MQTT puts it on the wire: fixed header 0x30 | qos << 1 | DUP and RETAIN
    flags, remaining length, topic, packet id, under MQTT 5 (`props` given) the properties
    with their length, then the payload."""
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    if props is not None:
        body += varint(len(props)) + props
    body += payload
    return bytes([0x30 | qos << 1 | flags]) + varint(len(body)) + body


def properties(i: int) -> bytes:
    """MQTT 5 PUBLISH properties of various lengths, some past 127 bytes (a 2-byte length)."""
    if i % 4 == 0:
        return b""
    utf8 = lambda s: len(s).to_bytes(2, "big") + s  # noqa: E731
    out = b"\x01\x01" + b"\x02" + (3600).to_bytes(4, "big")  # payload format indicator, message expiry
    if i % 4 == 2:
        out += b"\x26" + utf8(b"gateway") + utf8(b"v" * (i % 300))  # a user property
    if i % 4 == 3:
        out += b"\x03" + utf8(b"application/json")  # content type
    return out


PINGRESP = b"\xd0\x00"


def unconnected_client(got: list[Received], protocol: str = "3.1.1") -> mqtt.Client:
    c = make_client(MqttConfig(client_id="reading-test", protocol=protocol))  # type: ignore[arg-type]
    c.on_publish_raw = lambda t, p, mid: got.append((t, p, mid))  # type: ignore[attr-defined]
    # what paho's own reading delivers, as the collector's on_message takes it
    c.on_message = lambda _c, _u, m: got.append((m._topic, m.payload, m.mid if m.qos else 0))
    return c


def counting_paho_reads(c: mqtt.Client) -> list[int]:
    """A one-item list counting the PUBLISH packets paho's own reading hands over (the rest are
    cut from the buffer)."""
    count = [0]
    handle = c._handle_publish

    def counted() -> mqtt.MQTTErrorCode:
        count[0] += 1
        return handle()

    c._handle_publish = counted  # type: ignore[method-assign]
    return count


def stream(n: int, big_every: int, big_size: int) -> list[tuple[bytes, bytes]]:
    """Numbered payloads, every `big_every`-th of them `big_size` bytes long."""
    out = []
    for i in range(n):
        size = big_size if big_every and i % big_every == big_every - 1 else 40 + i % 50
        head = f'{{"n": {i}, "pad": "'.encode()
        out.append((f"ews/440106/440106004/batch/GW-{i % 7}".encode(),
                    head + b"x" * max(0, size - len(head) - 2) + b'"}'))
    return out


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_packets_come_out_whole_across_chunks_and_select_sees_everything(
        monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    """Thousands of small packets and some larger than a chunk, written from another thread
    while a select()-driven loop reads them as paho's own loop does: every one arrives exactly
    as sent, in order, including the last ones after the writer has stopped (left in the
    buffer, select() would never wake for them). Under MQTT 5 with properties of all sizes."""
    monkeypatch.setattr(mqttclient, "READ_BURST", 10)  # return to select() often
    sent = stream(3000, 500, 3 * READ_CHUNK + 17)
    mids = [0 if i % 3 == 0 else 1 + i % 65535 for i in range(len(sent))]  # every third at QoS 0
    pingresp, puback = (PINGRESP, b"\x40\x02\x00\x01") if protocol == "3.1.1" else (PINGRESP, b"\x40\x03\x00\x01\x00")
    wire = b"".join(
        publish_packet(t, p, mids[i], qos=1 if mids[i] else 0,
                       flags=(0x01 | (0x08 if mids[i] else 0)) if i % 5 == 0 else 0,  # RETAIN, DUP (QoS 1 only)
                       props=properties(i) if protocol == "5" else None)
        + (pingresp if i % 101 == 0 else b"") + (puback if i % 211 == 0 else b"")
        for i, (t, p) in enumerate(sent))
    got: list[Received] = []
    c = unconnected_client(got, protocol)
    by_paho = counting_paho_reads(c)  # packets paho's own reading took
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    c._sock = ours

    def write() -> None:
        for k in range(0, len(wire), 4093):  # pieces that end anywhere inside a packet
            theirs.sendall(wire[k:k + 4093])

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(got) < len(sent):
        if select.select([ours], [], [], 0.5)[0]:
            assert c.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            assert not c._buffered()  # type: ignore[attr-defined]
        elif not writer.is_alive():
            break
    writer.join()
    ours.close()
    theirs.close()
    assert len(got) == len(sent)
    assert [(t, p) for t, p, _ in got] == sent
    assert [mid for _, _, mid in got] == mids
    assert 0 < by_paho[0] < len(sent) / 10  # both ways of reading a packet were taken


def test_a_packet_a_chunk_ends_inside_is_completed_from_the_socket() -> None:
    """Gateway batches of 5 KB: a 64 KB chunk ends inside one packet in thirteen. When the rest
    of it already waits on the socket it is read on and cut from the buffer like the others,
    not handed to paho's reading (a dozen Python calls a packet); what is not there yet still
    is, and comes out whole."""
    sent = [(f"ews/440106/440106004/batch/GW-{i % 7}".encode(), b"x" * (5000 + i)) for i in range(40)]
    wire = b"".join(publish_packet(t, p, 1 + i) for i, (t, p) in enumerate(sent))
    assert len(wire) > 3 * READ_CHUNK
    got: list[Received] = []
    c = unconnected_client(got)
    by_paho = counting_paho_reads(c)
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    ours.setblocking(False)
    c._sock = ours
    cut = len(wire) - 3000  # the last packet arrives in two parts, the second one later
    theirs.sendall(wire[:cut])
    assert c.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    # paho reads a wake-up's first packet (the buffer is filled by that read); every chunk
    # boundary after it was read on
    assert len(got) == len(sent) - 1 and by_paho[0] == 1
    theirs.sendall(wire[cut:])
    assert select.select([ours], [], [], 5)[0]
    assert c.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [(t, p) for t, p, _ in got] == sent and [m for _, _, m in got] == list(range(1, 41))
    assert by_paho[0] == 2  # and the one whose rest was not there yet
    ours.close()
    theirs.close()


def test_packets_cut_from_the_buffer_count_for_keepalive() -> None:
    """paho closes a connection it has heard nothing on for 1.5 keepalives; packets that never
    pass through paho's reading must still count as heard."""
    got: list[Received] = []
    c = unconnected_client(got)
    ours, theirs = socket.socketpair()
    c._sock = ours
    c._rsock, c._rbuf, c._rpos = ours, publish_packet(b"ews/440106/440106004/batch/GW-1", b'{"n": 1}', 5) * 3, 0
    heard = "_last_bytes_received" if hasattr(c, "_last_bytes_received") else "_last_msg_in"  # paho 2.2, 2.1
    setattr(c, heard, 0.0)
    assert c._take_publishes() == 3  # type: ignore[attr-defined]
    assert getattr(c, heard) > 0.0
    ours.close()
    theirs.close()


@pytest.mark.parametrize("packet", [
    b"\x32\x05\x00\x00\x00\x01\x7b",  # no topic
    b"\x32\x05\x00\x03ab\x00",  # the topic runs past the packet's end
    b"\x32\x04\x00\x02ab",  # QoS 1 with no room for its packet id
    b"\x30\xff\xff\xff\xff\x01",  # a remaining length of five bytes
])
def test_a_malformed_publish_ends_the_connection_after_the_good_ones(packet: bytes) -> None:
    got: list[Received] = []
    c = unconnected_client(got)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    c._sock = ours
    good = publish_packet(b"ews/440106/440106004/batch/GW-1", b'{"n": 1}', 5)
    theirs.sendall(good + good + packet + good)
    assert c.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert [mid for _, _, mid in got] == [5, 5]
    theirs.close()


def test_bytes_of_a_closed_connection_are_not_read_as_the_next_ones() -> None:
    """A malformed packet ends the connection while the packet after it is already buffered;
    after the reconnect, only what the new connection sends is read."""
    got: list[Received] = []
    c = unconnected_client(got)
    old, old_peer = socket.socketpair()
    old.setblocking(False)
    c._sock = old
    malformed = b"\x32\x05\xff\xff\x00\x01\x00"  # its topic length points past its end
    stale = publish_packet(b"ews/440106/440106004/batch/GW-1", b'{"stale": true}', 7)
    old_peer.sendall(publish_packet(b"ews/440106/440106004/batch/GW-1", b'{"first": true}', 6) + malformed + stale)
    assert c.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert [p for _, p, _ in got] == [b'{"first": true}']
    assert c._sock is None  # paho closed the connection on the protocol error
    old_peer.close()

    new, new_peer = socket.socketpair()
    new.setblocking(False)
    c._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
                    "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0}  # as reconnect() does
    c._sock = new
    new_peer.sendall(publish_packet(b"ews/440106/440106004/batch/GW-2", b'{"fresh": true}', 1))
    assert select.select([new], [], [], 5)[0]
    assert c.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [p for _, p, _ in got] == [b'{"first": true}', b'{"fresh": true}']
    new.close()
    new_peer.close()


def _receive_through(cfg: MqttConfig, publisher: mqtt.Client, sent: list[tuple[bytes, bytes]],
                     props: Properties | None = None) -> list[Received]:
    got: list[Received] = []
    lock = threading.Lock()
    c = make_client(cfg)

    def sink(topic: bytes, payload: bytes, mid: int) -> None:
        with lock:
            got.append((topic, payload, mid))
        ack_many(c, [mid])

    c.on_publish_raw = sink  # type: ignore[attr-defined]
    c.on_message = lambda _c, _u, m: sink(m._topic, m.payload, m.mid if m.qos else 0)
    subscribed = threading.Event()
    c.on_connect = lambda cl, *_a: cl.subscribe("ews/440106/#", qos=1)
    c.on_subscribe = lambda *_a: subscribed.set()
    mqttclient.connect_async(c, cfg)
    c.loop_start()
    try:
        assert subscribed.wait(15), "no SUBACK"
        infos = [publisher.publish(t.decode(), p, qos=1, properties=props) for t, p in sent]
        for info in infos:
            info.wait_for_publish(30)
        assert wait_for(lambda: len(got) >= len(sent), timeout=60)
        time.sleep(0.2)  # anything extra (a duplicate, a misread packet) would show up now
    finally:
        c.disconnect()
        c.loop_stop()
    return got


def _publisher(port: int, client_id: str, tls: tuple[Path, str, str] | None = None,
               protocol: int = mqtt.MQTTv311) -> mqtt.Client:
    p = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    if tls is not None:
        p.tls_set(ca_certs=str(tls[0]))
        p.username_pw_set(tls[1], tls[2])
    p.max_inflight_messages_set(200)
    p.connect("127.0.0.1", port)
    p.loop_start()
    return p


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_mosquitto_stream_arrives_whole(servers: LocalServers, protocol: str) -> None:
    """Under MQTT 5 the publisher's properties (a user property, an expiry) travel with every
    message and are skipped."""
    sent = stream(4000, 400, 200 * 1024)
    props = None
    if protocol == "5":
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("gateway", "GW-440106004")
        props.MessageExpiryInterval = 3600
    pub = _publisher(servers.mqtt.port, f"reading-pub-{protocol}",
                     protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
    try:
        cfg = MqttConfig(port=servers.mqtt.port, client_id=f"reading-sub-{time.time_ns()}",
                         protocol=protocol)  # type: ignore[arg-type]
        got = _receive_through(cfg, pub, sent, props)
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert sorted((t, p) for t, p, _ in got) == sorted(sent)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedServer, dict[str, str], Path]]:
    root = Path(tmp_path_factory.mktemp("reading-tls"))
    tls = dev_certificates_dir(root / "tls")
    passwords = provision(REPO / "ews" / "sample" / "broker-clients.yaml", root / "auth")
    broker = mosquitto_secure(root, root / "auth", tls)
    broker.start()
    yield broker, passwords, tls / "ca.pem"
    broker.stop()


@pytest.mark.integration
def test_tls_stream_arrives_whole(tls_broker: tuple[ManagedServer, dict[str, str], Path],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Over TLS a read returns at most one record (16 KB), so a chunk is refilled many times
    inside one large packet."""
    broker, pw, ca = tls_broker
    sent = stream(2000, 250, 200 * 1024)  # under the secure broker's 256 KB message limit
    monkeypatch.setenv("EWS_TEST_MQTT_PASSWORD", pw["ews-pipeline-440106"])
    pub = _publisher(broker.port, "GW-440106004", (ca, "GW-440106004", pw["GW-440106004"]))
    try:
        cfg = MqttConfig(port=broker.port, client_id="ews-pipeline-440106", username="ews-pipeline-440106",
                         password_env="EWS_TEST_MQTT_PASSWORD", tls=MqttTls(ca_file=ca))
        got = _receive_through(cfg, pub, sent)
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert sorted((t, p) for t, p, _ in got) == sorted(sent)
