"""A pipeline (not connected to the broker) with the API over it, for the API tests.

Readings go straight into `Pipeline.on_readings`, so warnings open and resolve exactly when a
test says; InfluxDB is the session's real server, for the readings and readiness endpoints.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from ews.api.app import create_app, detach
from ews.api.auth import TokenStore, token_hash
from ews.api.context import ApiContext
from ews.config import (
    ApiConfig,
    ChannelConfig,
    Config,
    InfluxConfig,
    MqttConfig,
    NotifierConfig,
    RegistryConfig,
)
from ews.models import ReadingBatch
from ews.pipeline import Pipeline

# name -> (role, region); the token is the name itself
TOKENS: dict[str, tuple[str, str]] = {
    "root-admin": ("admin", "*"),
    "district-admin": ("admin", "440106"),
    "district-viewer": ("viewer", "440106"),
    "s01-duty": ("duty_officer", "440106001"),
    "s01-viewer": ("viewer", "440106001"),
    "c-duty": ("duty_officer", "440106001003"),
    "s02-admin": ("admin", "440106002"),
}
S01_GAS, S02_GAS = "GS-0001", "GS-0002"  # in 440106001003 and 440106002001


def write_tokens(path: Path, tokens: dict[str, tuple[str, str]] = TOKENS) -> Path:
    lines = ["tokens:"]
    for name, (role, region) in tokens.items():
        lines.append(f"  - {{name: {name}, role: {role}, region: '{region}', sha256: {token_hash(name)}}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}"}


@dataclass
class Env:
    pipeline: Pipeline
    app: FastAPI
    client: TestClient
    clock: itertools.count[int] = field(default_factory=lambda: itertools.count(int(time.time() * 1000) - 3_600_000,
                                                                                   1000))

    def feed(self, sensor_id: str, value: float, ts_ms: int | None = None) -> int:
        t = next(self.clock) if ts_ms is None else ts_ms
        self.pipeline.on_readings(ReadingBatch.of([self.pipeline.sensors.index[sensor_id]], [t], [value]))
        return t

    def open_pair(self) -> tuple[str, str]:
        """An orange gas warning in street 440106001 and a red one in street 440106002."""
        self.feed(S01_GAS, 31.0)
        self.feed(S02_GAS, 60.0)
        a = self.pipeline.store.find_open("gas", S01_GAS)
        b = self.pipeline.store.find_open("gas", S02_GAS)
        assert a is not None and b is not None
        return str(a["id"]), str(b["id"])

    def resolve_all(self) -> None:
        for sid in (S01_GAS, S02_GAS):
            self.feed(sid, 0.0)

    def close(self) -> None:
        detach(self.app)
        self.pipeline.store.close()


def make_env(tmp: Path, influx_url: str, database: str, mqtt_port: int = 1, rules: Path | None = None) -> Env:
    cfg = Config(
        mqtt=MqttConfig(port=mqtt_port, client_id=f"api-{tmp.name}"[:64]),
        influxdb=InfluxConfig(url=influx_url, database=database),
        registries=RegistryConfig.sample(),
        state_dir=tmp / "state",
        rules=rules,
        notifiers=NotifierConfig(channels=[ChannelConfig(name="console", type="console")]),
        api=ApiConfig(port=0, tokens=write_tokens(tmp / "tokens.yaml")),
    )
    p = Pipeline(cfg)
    assert cfg.api is not None
    app = create_app(ApiContext.from_pipeline(p, cfg.api), TokenStore(cfg.api.tokens, p.regions))
    return Env(p, app, TestClient(app))
