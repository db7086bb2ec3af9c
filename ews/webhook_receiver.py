"""A small webhook receiver on loopback that checks signatures and de-duplicates.

The demo uses it as the duty system's endpoint so the signed delivery path runs for real;
it is also a reference for integrators: verify the signature, then de-duplicate by
`Idempotency-Key`, because delivery is at least once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from notifiers.channels.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


@dataclass
class Received:
    bodies: list[dict[str, Any]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    duplicates: int = 0
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class WebhookReceiver:
    def __init__(self, secret: str, host: str = "127.0.0.1", port: int = 0):
        self.secret = secret
        self.received = Received()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = verify_signature(
                    receiver.secret, self.headers.get(TIMESTAMP_HEADER, ""), body,
                    self.headers.get(SIGNATURE_HEADER),
                )
                key = self.headers.get(IDEMPOTENCY_HEADER, "")
                rec = receiver.received
                with rec.lock:
                    if not ok:
                        rec.bad_signatures += 1
                    elif key in rec.keys:
                        rec.duplicates += 1
                    else:
                        rec.keys.add(key)
                        rec.bodies.append(orjson.loads(body))
                self.send_response(204 if ok else 401)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/ews"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
