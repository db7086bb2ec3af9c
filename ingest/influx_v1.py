"""The InfluxDB v1 HTTP API: `/write` line protocol and InfluxQL `/query`.

Works with InfluxDB 1.x and with 2.x/3.x through their v1 compatibility endpoints. Credentials:
user and password as HTTP basic auth (1.x, and proxies), or a token sent as
`Authorization: Token ...` (2.x/3.x compatibility, 1.8's `Token user:password`).
"""

from __future__ import annotations

from typing import Any

import httpx


class WriteError(Exception):
    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


# answers that say the points themselves are wrong: sending them again cannot help
NOT_RETRYABLE = frozenset({400, 413, 422})


class InfluxV1:
    def __init__(
        self, url: str, database: str, username: str | None = None, password: str | None = None,
        timeout_s: float = 10.0, token: str | None = None, write_timeout_s: float | None = None,
    ):
        self.database = database
        auth = (username, password or "") if username and not token else None
        headers = {"Authorization": f"Token {token}"} if token else None
        self.write_timeout_s = write_timeout_s or timeout_s
        # a plain-HTTP server needs no CA store: loading it costs tens of ms per client
        verify = not url.startswith("http://")
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, auth=auth, headers=headers,
                                 verify=verify)

    def close(self) -> None:
        self.http.close()

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
        try:
            r = self.http.post(
                "/write", params={"db": self.database, "precision": "ms"}, content=lines,
                headers={"Content-Type": "text/plain; charset=utf-8"}, timeout=self.write_timeout_s,
            )
        except httpx.HTTPError as exc:
            raise WriteError(f"InfluxDB unreachable: {exc!r}", retryable=True) from exc
        if r.status_code == 204:
            return
        # 401/403/404 are configuration (credentials, database) and heal when it is fixed
        raise WriteError(
            f"InfluxDB /write answered {r.status_code}: {r.text[:300]}",
            retryable=r.status_code not in NOT_RETRYABLE,
        )

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
