"""The paho client of the collector: persistent session, manual acknowledgement, bulk acks.

MQTT 3.1.1 by default: paho parses MQTT 5 properties on every PUBLISH, which costs about a
third of its per-message time (measured here: 9,700 against 14,600 msg/s for a bare
subscriber). Under 3.1.1 the session is kept by `clean_session=False` and the broker's
`persistent_client_expiration`; under 5 by `clean_start=False` and the session expiry
interval, with `Receive Maximum` bounding what the broker sends before we acknowledge.

Receiving: paho builds an `MQTTMessage` per PUBLISH (struct formats made per packet, a topic
decode, the topic matcher under a lock); the collector needs only the raw topic, payload and
packet id, which `Client._handle_publish` hands straight to it (for QoS 2 or an
automatic-ack client, paho's own path runs).

Reading: paho's `loop_read` handles one packet per `select()` wake-up when the client has
nothing of its own in flight, as a subscriber mostly has not, so every message paid for a
`select()` and a round of loop bookkeeping. `Client.loop_read` reads until the socket is
drained (at most `READ_BURST` packets, so writes and keepalives still get their turn): a bare
subscriber went from 13,400 to 25,300 msg/s here with it (MQTT 3.1.1, same run, loaded machine).

paho also reads a packet in three or more `recv` calls (its first byte, each byte of its
length, then the rest), each a system call that lets go of the interpreter lock and must win it
back from the decode and rules threads, and keeps per-packet state in a dict, a bytearray and
two lock rounds. `Client._sock_recv` reads up to `READ_CHUNK` bytes at once and hands paho its
pieces from that, and `_take_publishes` cuts the whole QoS 0/1 PUBLISH packets at the head of
that buffer itself (under MQTT 3.1.1 and 5), straight to the collector. A PUBLISH a chunk ends
inside is completed by reading on when its rest already waits on the socket (with gateway
batches of 5 KB, about one packet in twelve, each of which paho's reading took in a dozen
Python calls); anything else (other packets, a PUBLISH whose rest has not arrived, one longer
than a chunk, a malformed one, which is then refused as before) goes through paho's own
reading. `loop_read` returns to `select()` only with the buffer empty, since `select()` cannot
see what it holds. The pipeline at one reading a message, three interleaved runs of
bench/ingest.py's stream: 61,550 msg/s median at 17.0 µs of CPU a reading before, 73,431 at
11.9 µs with the chunked reads alone (its threads switched a twelfth as often), 141,978 at 5.2
µs with the PUBLISH packets cut from the buffer.

Acknowledgements go out in bulk: paho's `ack(mid)` queues one 4-byte PUBACK and wakes its
network thread through a socket pair per call; `ack_many` queues the PUBACKs of a whole batch
as one packet (one wake-up, one `send`), which doubled a bare subscriber's rate here (14,600
to 31,000 msg/s under 3.1.1). It goes through paho's internal `_packet_queue`, the call its own
`ack` makes; where that is missing, it falls back to `ack` per message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ews.config import MqttConfig, secret

PUBACK = 0x40
READ_BURST = 1000
READ_CHUNK = 64 * 1024


Sink = Callable[[bytes, bytes, int], None]  # topic (raw bytes), payload, packet id (0: QoS 0)


class Client(mqtt.Client):
    """paho's client, reading its socket in chunks and every packet waiting when it wakes.

    With `on_publish_raw` set and manual acknowledgement, a QoS 0/1 PUBLISH goes straight to
    it as (topic bytes, payload, packet id), skipping paho's message object, its topic
    matching and callback locks: cut from the read buffer by `_take_publishes`, or, when paho
    read it itself (a chunk ended inside it), by `_handle_publish`, both through
    `_publish_parts` (MQTT 3.1.1 and 5). Anything else takes paho's own path.
    """

    on_publish_raw: Sink | None = None

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        sink = self.on_publish_raw
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if sink is None or qos > 1 or not self._manual_ack:
            return super()._handle_publish()
        packet = bytes(self._in_packet["packet"])
        parts = _publish_parts(packet, 0, len(packet), qos, self._protocol == mqtt.MQTTv5)
        if parts is None:
            return mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        sink(*parts)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    _rsock: object = None  # the socket `_rbuf` was read from
    _rbuf = b""
    _rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf) or self._rsock is not self._sock:  # empty, or left from a closed connection
            sock = self._sock
            buf = super()._sock_recv(max(bufsize, READ_CHUNK))  # BlockingIOError when nothing waits
            if not buf:
                return buf  # the broker closed the connection
            self._rsock, self._rbuf, pos = sock, buf, 0
        self._rpos = pos + bufsize
        return buf[pos:pos + bufsize]

    def _buffered(self) -> bool:
        return self._rpos < len(self._rbuf) and self._rsock is self._sock

    def _raw_publishes(self) -> bool:
        return (self.on_publish_raw is not None and self._manual_ack
                and self._in_packet["command"] == 0 and self._buffered())

    def _take_publishes(self) -> int:
        """Hand the whole QoS 0/1 PUBLISH packets at the head of the buffer to the sink, without
        paho's per-packet state; stop at anything else, malformed included. A packet the buffer
        ends inside is completed from the socket when what it lacks is already there (`_read_on`);
        otherwise, and for a packet longer than a chunk, paho's own reading takes it. Returns how
        many."""
        sink = self.on_publish_raw
        assert sink is not None
        buf, pos = self._rbuf, self._rpos
        end = len(buf)
        v5 = self._protocol == mqtt.MQTTv5
        n = 0
        while pos < end:
            header = buf[pos]
            qos = (header >> 1) & 3
            if header >> 4 != 3 or qos > 1:
                break
            length, i = read_varint(buf, pos + 1, end)
            if length >= 0 and i + length <= end:
                parts = _publish_parts(buf, i, i + length, qos, v5)
                if parts is None:
                    break
                self._rpos = pos = i + length
                sink(*parts)
                n += 1
                continue
            # the packet, or its length, runs past the buffer: a length of 5 bytes or more is
            # malformed (paho rejects it), a packet longer than a chunk is paho's to read
            if (length < 0 and end - pos > 5) or length > READ_CHUNK or not self._read_on(pos):
                break
            buf, pos, end = self._rbuf, 0, len(self._rbuf)
        if n:
            with self._msgtime_mutex:  # what paho's keepalive reads: 2.2 names it so, 2.1 _last_msg_in
                if hasattr(self, "_last_bytes_received"):
                    self._last_bytes_received = mqtt.time_func()
                else:
                    self._last_msg_in = mqtt.time_func()
        return n

    def _read_on(self, pos: int) -> bool:
        """Append what waits on the socket to the buffer's unread rest (from `pos`), so that a
        packet a chunk ended inside is cut from the buffer too; False when nothing waits (or the
        connection is closed or failed: paho's reading then meets that itself)."""
        try:
            more = super()._sock_recv(READ_CHUNK)
        except OSError:  # BlockingIOError when nothing waits
            return False
        if not more:
            return False
        self._rbuf, self._rpos = self._rbuf[pos:] + more, 0
        return True

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        if not hasattr(self, "_packet_read"):  # another paho: its own loop
            return super().loop_read(max_packets)
        packets = 0
        while True:
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            if self._raw_publishes() and (taken := self._take_publishes()):
                packets += taken
                if packets >= READ_BURST and not self._buffered():
                    return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
                continue
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            packets += 1
            # AGAIN with bytes still buffered: paho paused inside a large packet, not a drained socket
            if (rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN or packets >= READ_BURST) and not self._buffered():
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


def _publish_parts(buf: bytes, at: int, end: int, qos: int, v5: bool) -> tuple[bytes, bytes, int] | None:
    """(topic, payload, packet id) of the PUBLISH whose variable header and payload are
    buf[at:end]; None when it has no topic, or its topic, packet id or properties run past its
    end. MQTT 5 properties are skipped: the collector has no use for them, and the one that
    would matter, a topic alias, is never sent (our CONNECT leaves Topic Alias Maximum at 0)."""
    topic_end = at + 2 + ((buf[at] << 8) | buf[at + 1]) if at + 2 <= end else end + 1
    payload_at = topic_end + 2 * qos
    if topic_end == at + 2 or payload_at > end:
        return None
    if v5:
        props, after = read_varint(buf, payload_at, end)
        if props < 0 or after + props > end:
            return None
        payload_at = after + props
    return buf[at + 2:topic_end], buf[payload_at:end], (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0


def read_varint(buf: bytes | bytearray, at: int, end: int) -> tuple[int, int]:
    """MQTT's variable byte integer at `at`, and where it ends; (-1, at) if it runs past `end`
    or past the four bytes MQTT allows."""
    value, shift, i = 0, 0, at
    while i < end and shift < 28:
        byte = buf[i]
        value |= (byte & 127) << shift
        shift += 7
        i += 1
        if byte < 128:
            return value, i
    return -1, at


OWN_INFLIGHT = 1000  # our own QoS 1 publishes unacknowledged at most


def honour_receive_maximum(c: mqtt.Client, props: Any) -> None:
    """Under MQTT 5 the broker's CONNACK says how many of our QoS 1 publishes it takes
    unacknowledged (Mosquitto: its max_inflight_messages); more is a protocol error it may
    answer by disconnecting (reason 0x93), and paho does not read it itself. Called from
    on_connect, where paho's setter refuses (the connection is open) and where an exception
    would end paho's network thread: so the attribute is set directly, and never raises."""
    limit = getattr(props, "ReceiveMaximum", None) if props is not None else None
    # absent: 65,535 (MQTT 5, 3.2.2.3.3), and under 3.1.1 there is no such bound
    bound = limit if isinstance(limit, int) and limit > 0 else 65535
    if isinstance(getattr(c, "_max_inflight_messages", None), int):
        c._max_inflight_messages = min(OWN_INFLIGHT, bound)


def make_client(cfg: MqttConfig) -> mqtt.Client:
    v5 = cfg.protocol == "5"
    kwargs: dict[str, Any] = {} if v5 else {"clean_session": False}
    c = Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=True, **kwargs,
    )
    if cfg.username:
        c.username_pw_set(cfg.username, secret(cfg.password_env))
    if cfg.tls is not None:
        t = cfg.tls
        c.tls_set(
            ca_certs=str(t.ca_file), certfile=str(t.cert_file) if t.cert_file else None,
            keyfile=str(t.key_file) if t.key_file else None,
        )
    c.max_inflight_messages_set(OWN_INFLIGHT)  # our own publishes (dead letters, warning state)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(min_delay=1, max_delay=30)
    return c


def connect_async(c: mqtt.Client, cfg: MqttConfig) -> None:
    if cfg.protocol == "5":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = cfg.session_expiry_s
        props.ReceiveMaximum = cfg.receive_maximum
        c.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=False, properties=props)
    else:
        c.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)


def puback_blob(mids: Sequence[int]) -> bytes:
    """The PUBACK packets of `mids`, back to back (valid under 3.1.1 and 5: reason 0, no properties)."""
    a = np.asarray(mids, np.uint16)
    out = np.empty((a.shape[0], 4), np.uint8)
    out[:, 0] = PUBACK
    out[:, 1] = 2
    out[:, 2] = a >> 8
    out[:, 3] = a & 0xFF
    return out.tobytes()


def ack_many(c: mqtt.Client, mids: Sequence[int]) -> None:
    """Acknowledge QoS 1 messages of the current connection in one queued packet."""
    if not len(mids):
        return
    queue = getattr(c, "_packet_queue", None)
    if queue is None:
        for mid in mids:
            c.ack(mid, 1)
        return
    queue(PUBACK, puback_blob(mids), 0, 0)
