"""A lean MQTT 3.1.1 publisher for load tests: QoS 1, pre-encoded packets, one socket.

paho-mqtt spends tens of microseconds of Python per message on a publisher (and stalled near
66,000 messages in one run here), which on a two-core machine takes CPU from the pipeline
under test. This client writes PUBLISH packets in bulk with one `sendall` per burst and counts
PUBACKs on a reader thread; a window bounds the messages awaiting acknowledgement. It does
only what a load driver needs: connect, publish at QoS 1, ping, disconnect. Nothing else in
the project uses it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time


class WireError(ConnectionError):
    pass


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


class LeanPublisher:
    def __init__(
        self, host: str, port: int, client_id: str, username: str | None = None, password: str | None = None,
        tls: ssl.SSLContext | None = None, window: int = 20_000, timeout_s: float = 10.0,
    ):
        self.window = min(window, 60_000)  # packet ids must stay unique among those in flight
        self.acked = 0
        self.sent = 0
        self._next_id = 0
        self._cond = threading.Condition()
        self._closed = False
        self._error: str | None = None
        raw = socket.create_connection((host, port), timeout=timeout_s)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        flags = 0x02  # clean session: a load driver keeps no state at the broker
        payload = _string(client_id.encode())
        if username is not None:
            flags |= 0x80
            payload += _string(username.encode())
            if password is not None:
                flags |= 0x40
                payload += _string(password.encode())
        body = _string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + payload
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        ack = self._read_exact(4)
        if ack[0] != 0x20 or ack[3] != 0:
            raise WireError(f"broker refused the connection (CONNACK return code {ack[3]})")
        self.sock.settimeout(None)
        self._last_ping = time.monotonic()
        self._reader = threading.Thread(target=self._read, name="lean-mqtt-reader", daemon=True)
        self._reader.start()

    def _read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise WireError("broker closed the connection")
            buf += chunk
        return buf

    def _read(self) -> None:
        buf = bytearray()
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise WireError("broker closed the connection")
                buf += chunk
                acks = 0
                pos = 0
                while pos + 2 <= len(buf):
                    kind = buf[pos] >> 4
                    length, shift, k = 0, 0, pos + 1
                    while k < len(buf):
                        length |= (buf[k] & 0x7F) << shift
                        shift += 7
                        k += 1
                        if not buf[k - 1] & 0x80:
                            break
                    else:
                        break
                    if k + length > len(buf):
                        break
                    if kind == 4:  # PUBACK
                        acks += 1
                    pos = k + length
                del buf[:pos]
                if acks:
                    with self._cond:
                        self.acked += acks
                        self._cond.notify_all()
        except (OSError, WireError) as exc:
            with self._cond:
                if not self._closed:
                    self._error = str(exc)
                self._cond.notify_all()

    def publish_many(self, packets: list[tuple[bytes, bytes]]) -> None:
        """Publish (topic, payload) pairs at QoS 1, waiting while the window is full."""
        with self._cond:
            while self.sent + len(packets) - self.acked > self.window and self._error is None:
                self._cond.wait(1.0)
            if self._error is not None:
                raise WireError(self._error)
        out = bytearray()
        for topic, payload in packets:
            self._next_id = self._next_id % 65535 + 1
            rest = struct.pack("!H", len(topic)) + topic + struct.pack("!H", self._next_id)
            out += b"\x32" + _varint(len(rest) + len(payload)) + rest + payload
        now = time.monotonic()
        if now - self._last_ping > 30:
            out += b"\xc0\x00"  # PINGREQ: a long burst must not look like a dead client
            self._last_ping = now
        self.sock.sendall(out)
        self.sent += len(packets)

    def wait_acked(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.acked >= self.sent or self._error is not None, timeout_s) \
                and self._error is None

    def close(self) -> None:
        with self._cond:
            self._closed = True
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        self.sock.close()
