"""The InfluxDB v2 write API (`/api/v2/write`) through the official `influxdb-client`.

For InfluxDB 2.x/3.x and the other servers that speak it (VictoriaMetrics among them). The
same line protocol as the v1 path goes out in one synchronous request per batch; retries are
ours (the spool), so the client's own are switched off. Credentials: a token
(`Authorization: Token ...`), or user and password as HTTP basic auth for a proxy or an
InfluxDB 1.8 in front. Buckets are provisioned by whoever runs the server: creating one needs
an organisation id and rights a writer should not hold, so `create_database` does nothing.
"""

from __future__ import annotations

from pathlib import Path

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from ingest.influx_v1 import WriteError, refused


class InfluxV2:
    def __init__(
        self, url: str, bucket: str, org: str = "", token: str | None = None,
        username: str | None = None, password: str | None = None, write_timeout_s: float = 10.0,
        ca_file: str | Path | None = None,
    ):
        self.bucket = bucket
        self.org = org
        basic = bool(username) and not token
        credential = token if token else (f"{username}:{password or ''}" if basic else None)
        self.client = InfluxDBClient(
            url=url, token=credential, org=org or None,  # type: ignore[arg-type]  # None is allowed
            timeout=int(write_timeout_s * 1000), auth_basic=basic, retries=False,
            ssl_ca_cert=str(ca_file) if ca_file else None,
        )
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def create_database(self) -> None:
        return None

    def write(self, lines: bytes) -> None:
        if not lines:
            return
        try:
            self.api.write(bucket=self.bucket, org=self.org, record=lines,
                           write_precision=WritePrecision.MS)  # type: ignore[arg-type]
        except ApiException as exc:
            if not exc.status:  # no answer at all: the client wraps connection and TLS errors so
                raise WriteError(f"InfluxDB v2 API unreachable: {exc.reason!r}", retryable=True) from exc
            body = exc.body.decode("utf-8", errors="replace") if isinstance(exc.body, bytes) else str(exc.body)
            raise refused("/api/v2/write", int(exc.status), body) from exc
        except Exception as exc:  # urllib3's connection errors and timeouts
            raise WriteError(f"InfluxDB v2 API unreachable: {exc!r}", retryable=True) from exc

    def retention_ms(self) -> int | None:
        """How far back the bucket keeps points (None: for ever), from the buckets API; servers
        that do not have it (VictoriaMetrics) answer an error, which the caller takes as unknown."""
        bucket = self.client.buckets_api().find_bucket_by_name(self.bucket)
        rules = [r for r in (bucket.retention_rules or []) if r.every_seconds] if bucket is not None else []
        return int(rules[0].every_seconds) * 1000 if rules else None

    def close(self) -> None:
        self.api.close()
        self.client.close()
