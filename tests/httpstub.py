"""Small HTTP receivers on loopback for the tests: a handler, a free port, a clean stop."""

from __future__ import annotations

import hashlib
import hmac
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import orjson


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature, written independently of the channel: HMAC-SHA256 over
    "<timestamp>.<body>"."""
    message = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed(secret: str, headers: Message, body: bytes) -> bool:
    """Whether a delivery carries the signature of `body` under `secret`."""
    want = expected_signature(secret, headers.get("X-EWS-Timestamp", ""), body)
    return hmac.compare_digest(want, headers.get("X-EWS-Signature", ""))


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output free of access-log lines."""

    def log_message(self, *_: object) -> None:
        return None


class HttpStub:
    """Serves `handler` on a free loopback port from daemon threads until `close`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True  # a handler still waiting does not hold up the stop
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HttpStub:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class Hook:
    """A webhook receiver that keeps every delivery; with a secret, only those whose HMAC
    signature it recomputes (the others are counted in `bad` and refused with 401)."""

    def __init__(self, secret: str | None = None) -> None:
        self.lock = threading.Lock()
        self.bodies: list[dict[str, Any]] = []
        self.bad = 0
        outer = self

        class H(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = secret is None or signed(secret, self.headers, body)
                with outer.lock:
                    if ok:
                        outer.bodies.append(orjson.loads(body))
                    else:
                        outer.bad += 1
                self.send_response(200 if ok else 401)
                self.end_headers()

        self.http = HttpStub(H)
        self.url = f"{self.http.url}/hook"

    def seen(self, rule: str | None = None) -> list[tuple[str, str]]:
        """(transition, level) of each delivery, of one rule or all."""
        with self.lock:
            return [(b["transition"], b["warning"]["level"]) for b in self.bodies
                    if rule is None or b["warning"]["rule"] == rule]
