"""The one configuration file, validated with pydantic.

Paths in it are relative to the file's folder. Secrets never live in it: fields ending in
`_env` name the environment variable that holds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ews.yamlfile import ConfigError, Problem, load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def secret(env_name: str | None) -> str | None:
    """Value of the environment variable named in config, or None when none is named."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if value is None:
        raise ConfigError([Problem("(environment)", None, env_name, "environment variable is not set")])
    return value


class MqttConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = Field("ews-pipeline", min_length=1, max_length=64)
    username: str | None = None
    password_env: str | None = None
    subscriptions: list[str] = Field(default_factory=lambda: ["ews/#"], min_length=1)
    keepalive_s: int = Field(30, ge=5)
    # persistent session: the broker keeps our queue while we are away
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0)
    dead_letter_prefix: str = "ews-out/rejected"
    warnings_prefix: str = "ews-out/warnings"


class InfluxConfig(_Strict):
    url: str = "http://127.0.0.1:8086"
    database: str = "ews"
    username: str | None = None
    password_env: str | None = None
    batch_size: int = Field(5000, ge=1)
    flush_interval_s: float = Field(0.2, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    create_database: bool = True


class IngestConfig(_Strict):
    unknown_sensor: Literal["reject"] = "reject"
    max_payload_bytes: int = Field(256 * 1024, ge=64)
    # a sensor clock may run a little ahead; beyond this a reading is rejected, not stored
    future_tolerance_s: float = Field(300.0, ge=0)


class RegistryConfig(_Strict):
    regions: Path
    sensors: Path


class ChannelConfig(_Strict):
    name: str
    type: Literal["console", "webhook"]
    url: str | None = None
    secret_env: str | None = None
    timeout_s: float = Field(5.0, gt=0)
    max_attempts: int = Field(8, ge=1)
    backoff_s: float = Field(0.5, gt=0)
    max_backoff_s: float = Field(60.0, gt=0)


class NotifierConfig(_Strict):
    routing: Path | None = None  # None: the packaged default policy
    language: Literal["zh-CN", "en"] = "zh-CN"
    channels: list[ChannelConfig] = Field(
        default_factory=lambda: [ChannelConfig(name="console", type="console")]
    )


class Config(_Strict):
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    influxdb: InfluxConfig = Field(default_factory=InfluxConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    registries: RegistryConfig
    rules: Path | None = None  # file or folder; None: the packaged defaults
    # a profile's files apply on top of the base rules (e.g. "guangdong": rainstorm without blue)
    rules_profile: str | None = None
    state_dir: Path = Path(".state/pipeline")
    notifiers: NotifierConfig = Field(default_factory=NotifierConfig)

    def resolve_paths(self, base: Path) -> Config:
        def r(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        c = self.model_copy(deep=True)
        c.registries.regions = r(c.registries.regions)  # type: ignore[assignment]
        c.registries.sensors = r(c.registries.sensors)  # type: ignore[assignment]
        c.rules = r(c.rules)
        c.state_dir = r(c.state_dir)  # type: ignore[assignment]
        c.notifiers.routing = r(c.notifiers.routing)
        return c


def load_config(path: str | Path) -> Config:
    p = Path(path)
    return load_model(Config, p).resolve_paths(p.parent.resolve())


def sample_dir() -> Path:
    return Path(__file__).parent / "sample"
