"""The CAP feed over HTTP: an Atom feed of current alerts and every CAP document.

Public alert aggregators poll an Atom feed whose entries link the CAP documents
(`application/cap+xml`). The feed lists the latest message of every warning that has not
expired, so a Cancel stays visible for its short validity and aggregators see the lifting.
Routes: `GET /cap/feed.atom` (also `/` and `/cap/`) and `GET /cap/{identifier}.xml`. The
standard library's threading HTTP server is enough for a feed polled every minute or so and
keeps the dependency list short; put a caching reverse proxy in front for public exposure.
"""

from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ews.hostport import split_listen
from notifiers.cap import cap_time
from notifiers.cap_store import CapStore

log = logging.getLogger(__name__)

ATOM_NS = "http://www.w3.org/2005/Atom"
FEED_PATH = "/cap/feed.atom"
CAP_TYPE = "application/cap+xml"


def document_url(base_url: str, ident: str) -> str:
    return f"{base_url.rstrip('/')}/cap/{quote(ident, safe='')}.xml"


def atom_feed(
    rows: list[dict[str, Any]], *, base_url: str, title: str, author: str, now_ms: int,
) -> bytes:
    """The Atom document for `rows` (CapStore.current)."""
    ET.register_namespace("", ATOM_NS)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
        if text is not None:
            el.text = text
        return el

    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    feed_url = base_url.rstrip("/") + FEED_PATH
    sub(feed, "id", feed_url)
    sub(feed, "title", title)
    # the newest entry's time; an empty feed changed when its last alert expired, i.e. now-ish
    sub(feed, "updated", cap_time(max(int(r["sent_ts_ms"]) for r in rows) if rows else now_ms))
    sub(feed, "link", rel="self", href=feed_url, type="application/atom+xml")
    sub(sub(feed, "author"), "name", author)
    for r in rows:
        url = document_url(base_url, r["identifier"])
        entry = sub(feed, "entry")
        sub(entry, "id", url)
        sub(entry, "title", r["headline"])
        sub(entry, "updated", r["sent"])
        sub(entry, "published", r["sent"])
        sub(entry, "link", rel="alternate", href=url, type=CAP_TYPE)
        sub(entry, "summary", f"{r['msg_type']} {r['status']}: {r['headline']}")
        sub(entry, "category", term=r["msg_type"])
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


class CapFeedServer:
    def __init__(
        self, store: CapStore, host: str = "127.0.0.1", port: int = 0, *, base_url: str | None = None,
        title: str = "预警信息 CAP", author: str = "ews", clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.base_url = base_url
        self.title = title
        self.author = author
        self.clock = clock
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{self.port}"

    def start(self) -> CapFeedServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.2,),
                                        name="ews-cap-feed", daemon=True)
        self._thread.start()
        log.info("CAP feed on %s%s", self.url, FEED_PATH)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("cap feed: " + fmt, *args)

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=30")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                base = server.base_url or f"http://{self.headers.get('Host') or server.url[7:]}"
                try:
                    if path in ("/", "/cap", "/cap/", FEED_PATH):
                        rows = server.store.current(int(server.clock() * 1000))
                        body = atom_feed(rows, base_url=base, title=server.title, author=server.author,
                                         now_ms=int(server.clock() * 1000))
                        self._send(200, body, "application/atom+xml; charset=utf-8")
                        return
                    if path.startswith("/cap/") and path.endswith(".xml"):
                        doc = server.store.document(unquote(path[len("/cap/"):-len(".xml")]))
                        if doc is not None:
                            self._send(200, doc, f"{CAP_TYPE}; charset=utf-8")
                            return
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")
                except Exception:
                    log.exception("cap feed: %s failed", path)
                    self._send(500, b"internal error\n", "text/plain; charset=utf-8")

        return Handler


def serve(db: str, listen: str, base_url: str | None = None, title: str = "预警信息 CAP") -> int:
    """Serve the feed of an existing CAP message file until SIGINT/SIGTERM (`ews cap-feed`)."""
    import signal

    host, port = split_listen(listen)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    store = CapStore(db)
    server = CapFeedServer(store, host, port, base_url=base_url, title=title).start()
    print(f"CAP feed on {server.url}{FEED_PATH}", flush=True)
    stop.wait()
    server.stop()
    store.close()
    return 0
