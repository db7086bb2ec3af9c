"""The InfluxDB v1 HTTP API: `/write` line protocol and InfluxQL `/query`.

Works with InfluxDB 1.x and with 2.x/3.x through their v1 compatibility endpoints. Credentials:
user and password as HTTP basic auth (1.x, and proxies), or a token sent as
`Authorization: Token ...` (2.x/3.x compatibility, 1.8's `Token user:password`).
"""

from __future__ import annotations

import base64
import http.client
import re
import ssl
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from ingest.refusal import Refusal, read_refusal


class WriteError(Exception):
    def __init__(self, message: str, retryable: bool, refusal: Refusal | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.refusal = refusal  # what a refusal that sending again cannot mend says


# answers about the request itself (too large, points InfluxDB will not take): sending the
# same request again cannot help; ingest/refusal.py reads what they say
NOT_RETRYABLE = frozenset({400, 413, 422})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_DURATION_MS = {"h": 3_600_000.0, "m": 60_000.0, "s": 1000.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}


def refused(api: str, status: int, body: str) -> WriteError:
    """The error for an answer other than success: retryable unless the request itself is refused."""
    if status in NOT_RETRYABLE:
        return WriteError(f"{api} answered {status}: {body[:300]}", retryable=False,
                          refusal=read_refusal(status, body))
    # 401/403/404 are configuration (credentials, database) and heal when it is fixed
    return WriteError(f"{api} answered {status}: {body[:300]}", retryable=True)


def duration_ms(text: str) -> int:
    """A Go duration as InfluxQL shows it ("168h0m0s", "0s") in milliseconds."""
    return int(sum(float(n) * _DURATION_MS[unit] for n, unit in _DURATION.findall(text)))


def _authorization(username: str | None, password: str | None, token: str | None) -> str:
    """The Authorization header: the token when there is one, else basic auth."""
    if token:
        return f"Token {token}"
    return "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()


class InfluxV1:
    def __init__(
        self, url: str, database: str, username: str | None = None, password: str | None = None,
        timeout_s: float = 10.0, token: str | None = None, write_timeout_s: float | None = None,
        ca_file: str | Path | None = None,
    ):
        self.database = database
        headers = {"Authorization": _authorization(username, password, token)} if token or username else {}
        self.write_timeout_s = write_timeout_s or timeout_s
        # a plain-HTTP server needs no CA store: loading it costs tens of ms per client
        self._tls = None if url.startswith("http://") else ssl.create_default_context(
            cafile=str(ca_file) if ca_file else None)
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, headers=headers,
                                 verify=self._tls or False)
        # writes, the hot path, go over the standard library's HTTP client: a third of httpx's CPU
        # per request, which counts when InfluxDB and the pipeline share the cores
        u = urlsplit(url)
        self._https = u.scheme == "https"
        self._host = u.hostname or "localhost"
        self._port = u.port or (443 if self._https else 80)
        self._write_path = f"{u.path.rstrip('/')}/write?{urlencode({'db': database, 'precision': 'ms'})}"
        self._write_headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        self._local = threading.local()  # one keep-alive connection per writing thread
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()
        with self._lock:
            for c in self._connections:
                c.close()
            self._connections.clear()

    def ping(self) -> bool:
        try:
            return self.http.get("/ping").status_code == 204
        except httpx.HTTPError:
            return False

    def create_database(self) -> None:
        self.query(f'CREATE DATABASE "{self.database}"', method="POST")

    def write(self, lines: bytes) -> None:
        if not lines:
            return
        conn, reused = self._connection()
        try:
            status, text = self._post(conn, lines)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if not reused:
                raise WriteError(f"InfluxDB unreachable: {exc!r}", retryable=True) from exc
            # a kept-alive connection the server has since closed: once more on a new one (a
            # write repeated is harmless, the same points land on the same series and times)
            try:
                status, text = self._post(conn, lines)
            except (OSError, http.client.HTTPException) as exc2:
                conn.close()
                raise WriteError(f"InfluxDB unreachable: {exc2!r}", retryable=True) from exc2
        if status == 204:
            return
        raise refused("InfluxDB /write", status, text)

    def retention_ms(self) -> int | None:
        """How far back the database's default retention policy keeps points (None: for ever)."""
        for series in self.query(f'SHOW RETENTION POLICIES ON "{self.database}"'):
            for row in series.get("values", []):
                policy = dict(zip(series["columns"], row, strict=False))
                if policy.get("default"):
                    return duration_ms(str(policy.get("duration", "0s"))) or None
        return None

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, conn.sock is not None
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.write_timeout_s,
                                               context=self._tls)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.write_timeout_s)
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn, False

    def _post(self, conn: http.client.HTTPConnection, lines: bytes) -> tuple[int, str]:
        conn.request("POST", self._write_path, body=lines, headers=self._write_headers)
        r = conn.getresponse()
        body = r.read()
        # enough of it for InfluxDB's whole error, which names what it left out at its end
        return r.status, body[:4000].decode("utf-8", errors="replace")

    def query(self, q: str, method: str = "GET") -> list[dict[str, Any]]:
        """Run InfluxQL; returns the `series` of the first statement (may be empty)."""
        params = {"db": self.database, "q": q, "epoch": "ms"}
        r = self.http.post("/query", data=params) if method == "POST" else self.http.get("/query", params=params)
        r.raise_for_status()
        body = r.json()
        results = body.get("results", [{}])
        if results and "error" in results[0]:
            raise RuntimeError(f"InfluxQL error: {results[0]['error']}")
        return list(results[0].get("series", [])) if results else []

    def count(self, measurement: str, where: str = "") -> int:
        series = self.query(f'SELECT count("value") FROM "{measurement}" {where}')
        return int(series[0]["values"][0][1]) if series else 0
