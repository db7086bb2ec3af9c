"""InfluxDB clients made from the configuration, so every part that talks to InfluxDB (ingest,
the rules' rebuild, the API, backtests, replays) uses the same credentials and trust: user and
password or token from the environment, and a private CA for https."""

from __future__ import annotations

from ews.config import InfluxConfig, secret
from ingest.influx_v1 import InfluxV1
from ingest.sink import LineWriter


def make_writer(cfg: InfluxConfig, database: str) -> LineWriter:
    """The write path the configuration chooses (v1 /write or influxdb-client's v2 API)."""
    token = secret(cfg.token_env)
    password = secret(cfg.password_env)
    if cfg.api == "v2":
        from ingest.influx_v2 import InfluxV2

        return InfluxV2(cfg.url, cfg.bucket or database, cfg.org, token, cfg.username, password,
                        cfg.write_deadline_s, cfg.ca_file)
    return InfluxV1(cfg.url, database, cfg.username, password, cfg.timeout_s, token, cfg.write_deadline_s,
                    cfg.ca_file)


def make_reader(cfg: InfluxConfig, database: str | None = None, timeout_s: float | None = None) -> InfluxV1:
    """An InfluxQL client (v1 /query; InfluxDB 2.x/3.x answer it through their v1 compatibility)."""
    return InfluxV1(cfg.url, database or cfg.database, cfg.username, secret(cfg.password_env),
                    timeout_s or cfg.timeout_s, secret(cfg.token_env), ca_file=cfg.ca_file)
