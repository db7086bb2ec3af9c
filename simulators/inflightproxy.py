"""A broker with a strict in-flight window, for tests and benchmarks: a TCP proxy in front of
Mosquitto that lets at most `window` QoS 1 deliveries per connection go unacknowledged.

Most brokers stop sending to a session at a small number of unacknowledged QoS 1 messages and
hold the rest in its queue, in order, until PUBACKs free slots: EMQX's `mqtt.max_inflight`
(32 by default, and under MQTT 5 the smaller of it and the client's Receive Maximum), VerneMQ's
`max_inflight_messages` (20), Mosquitto's (20). Mosquitto 2.0.11, the one Debian ships, keeps
to it only until the first acknowledgements arrive and then sends far more (32, then 1,024,
then the rest, measured here), so it cannot show how the pipeline behaves behind a strict
window. The proxy enforces the documented behaviour on Mosquitto's output: QoS 1 PUBLISH
packets past the window wait, first in first out, and go out as the client's PUBACKs come in;
every other packet passes unchanged. The other way, the client's own unacknowledged QoS 1
publishes are only counted (`client_unacked_peak`), to check that it keeps to the broker's
Receive Maximum.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable

from ingest.mqttclient import read_varint

PUBLISH, PUBACK = 3, 4


def _packets(buf: bytearray) -> list[bytes]:
    """Whole MQTT packets at the head of `buf`, taken out of it."""
    out: list[bytes] = []
    while len(buf) >= 2:
        length, i = read_varint(buf, 1, len(buf))
        if length < 0 or len(buf) < i + length:
            return out
        out.append(bytes(buf[:i + length]))
        del buf[:i + length]
    return out


def _body_start(pkt: bytes) -> int:
    return read_varint(pkt, 1, len(pkt))[1]


def publish_mid(pkt: bytes) -> int | None:
    """The packet id of a QoS 1 PUBLISH, else None."""
    if pkt[0] >> 4 != PUBLISH or (pkt[0] >> 1) & 3 != 1:
        return None
    i = _body_start(pkt)
    topic_len = int.from_bytes(pkt[i:i + 2], "big")
    j = i + 2 + topic_len
    return int.from_bytes(pkt[j:j + 2], "big")


def puback_mid(pkt: bytes) -> int | None:
    if pkt[0] >> 4 != PUBACK:
        return None
    i = _body_start(pkt)
    return int.from_bytes(pkt[i:i + 2], "big")


class _Session:
    """One client connection and its upstream connection, with the window between them."""

    def __init__(self, client: socket.socket, upstream: socket.socket, window: int):
        self.client = client
        self.upstream = upstream
        self.window = window
        self.inflight: set[int] = set()
        self.held: deque[tuple[int, bytes]] = deque()
        self.lock = threading.Lock()  # inflight, held, and sends to the client
        self.held_peak = 0
        # the other direction, only counted: the client's QoS 1 publishes the broker has not acked
        self.client_unacked: set[int] = set()
        self.client_unacked_peak = 0

    def run(self) -> None:
        for src, handle in ((self.upstream, self._from_broker), (self.client, self._from_client)):
            threading.Thread(target=self._pump, args=(src, handle), daemon=True, name="inflight-proxy").start()

    def close(self) -> None:
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _pump(self, src: socket.socket, handle: Callable[[list[bytes]], None]) -> None:
        buf = bytearray()
        try:
            while data := src.recv(1 << 16):
                buf += data
                handle(_packets(buf))
        except OSError:
            pass
        self.close()

    def _from_broker(self, pkts: list[bytes]) -> None:
        """QoS 1 deliveries past the window wait; everything else passes."""
        out = []
        with self.lock:
            for pkt in pkts:
                if (acked := puback_mid(pkt)) is not None:
                    self.client_unacked.discard(acked)
                mid = publish_mid(pkt)
                if mid is None or (not self.held and len(self.inflight) < self.window):
                    if mid is not None:
                        self.inflight.add(mid)
                    out.append(pkt)
                else:
                    self.held.append((mid, pkt))
            self.held_peak = max(self.held_peak, len(self.held))
            if out:
                self.client.sendall(b"".join(out))

    def _from_client(self, pkts: list[bytes]) -> None:
        """Everything passes to the broker; each PUBACK frees a slot for a held delivery."""
        with self.lock:  # counted before it goes: the broker's PUBACK may come back at once
            self.client_unacked.update(m for p in pkts if (m := publish_mid(p)) is not None)
            self.client_unacked_peak = max(self.client_unacked_peak, len(self.client_unacked))
        self.upstream.sendall(b"".join(pkts))
        acked = [m for p in pkts if (m := puback_mid(p)) is not None]
        if acked:
            self._release(acked)

    def _release(self, acked: list[int]) -> None:
        with self.lock:
            self.inflight.difference_update(acked)
            out = []
            while self.held and len(self.inflight) < self.window:
                mid, pkt = self.held.popleft()
                self.inflight.add(mid)
                out.append(pkt)
            if out:
                self.client.sendall(b"".join(out))


class InflightProxy:
    """Listens on a free loopback port and forwards to the broker at `upstream_port`."""

    def __init__(self, upstream_port: int, window: int):
        self.upstream_port = upstream_port
        self.window = window
        self.sessions: list[_Session] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True, name="inflight-proxy-accept").start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:  # the broker is down (a restart test): the client sees a refusal and retries
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = _Session(client, upstream, self.window)
            self.sessions.append(session)
            session.run()

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()
        for s in self.sessions:
            s.close()
