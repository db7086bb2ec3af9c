"""The one configuration file, validated with pydantic.

Paths in it are relative to the file's folder. Secrets never live in it: fields ending in
`_env` name the environment variable that holds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ews import affinity
from ews.hostport import split_listen
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
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


class MqttTls(_Strict):
    ca_file: Path  # the CA that signed the broker's certificate
    cert_file: Path | None = None  # client certificate, where the broker asks for one
    key_file: Path | None = None


class MqttConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = Field("ews-pipeline", min_length=1, max_length=64)
    username: str | None = None
    password_env: str | None = None
    tls: MqttTls | None = None
    subscriptions: list[str] = Field(default_factory=lambda: ["ews/#"], min_length=1)
    keepalive_s: int = Field(30, ge=5)
    # persistent session: the broker keeps our queue while we are away
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0)
    # 3.1.1 costs paho a third less per message; the broker's own in-flight limit then bounds
    # unacknowledged messages (deploy/mosquitto: max_inflight_messages), under 5 receive_maximum does
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    receive_maximum: int = Field(20000, ge=1, le=65535)
    dead_letter_prefix: str = "ews-out/rejected"
    warnings_prefix: str = "ews-out/warnings"
    # drills publish under their own topic root; each subscription is mirrored onto it, so a
    # drill reaches the pipeline that serves its region. None: drills are not accepted
    drill_root: str | None = "ews-drill"
    # drill warnings' retained state, apart from the real one that sirens and displays follow
    drill_warnings_prefix: str = "ews-out/drill/warnings"


class InfluxConfig(_Strict):
    url: str = "http://127.0.0.1:8086"
    # v1: POST /write (InfluxDB 1.x, and 2.x/3.x v1 compatibility); v2: influxdb-client on
    # /api/v2/write (InfluxDB 2.x/3.x, VictoriaMetrics and other servers that speak it)
    api: Literal["v1", "v2"] = "v1"
    database: str = "ews"
    org: str = ""  # v2 only
    bucket: str | None = None  # v2 only; None: the database name
    # credentials: user + password (HTTP basic) or a token ("Authorization: Token ..."), from
    # the environment
    username: str | None = None
    password_env: str | None = None
    token_env: str | None = None
    batch_size: int = Field(5000, ge=1)  # messages per batch at most
    batch_bytes: int = Field(1024 * 1024, ge=1024)  # payload bytes per batch at most
    flush_interval_s: float = Field(0.05, gt=0)  # how long a batch waits to fill at low rates
    timeout_s: float = Field(10.0, gt=0)
    # a write that takes longer goes to the disk spool instead, and the messages are acknowledged
    write_deadline_s: float = Field(5.0, gt=0)
    # a large batch goes out as this many concurrent requests (InfluxDB ingests them in parallel)
    write_concurrency: int = Field(2, ge=1, le=8)
    create_database: bool = True
    drill_database: str | None = None  # drill readings are kept apart; None: "{database}_drill"
    ca_file: Path | None = None  # https: a private CA to trust instead of the system's

    @property
    def drill_db(self) -> str:
        return self.drill_database or f"{self.database}_drill"


class IngestConfig(_Strict):
    # reject: dead-letter readings of sensors missing from the registry; store: keep them in
    # InfluxDB (measurement "unregistered") and raise a device warning for the community
    unknown_sensor: Literal["reject", "store"] = "reject"
    max_payload_bytes: int = Field(256 * 1024, ge=64)
    # a sensor clock may run a little ahead; beyond this a reading is rejected, not stored
    future_tolerance_s: float = Field(300.0, ge=0)
    # older readings are stored but not evaluated (store) or rejected as too_old (reject)
    allowed_lateness_s: float = Field(86400.0, gt=0)
    late_policy: Literal["store", "reject"] = "store"
    # fsync'ed disk spool while InfluxDB is down or slow; None: {state_dir}/spool
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(1024**3, ge=1024)
    spool_warn_fraction: float = Field(0.8, gt=0, le=1)  # log and flag loudly from here on
    # received and not yet processed; beyond it the MQTT thread waits (TCP back-pressure)
    queue_max_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024)
    # readings wait this long (wall time) before the rules see them, sorted by event time, so
    # deliveries out of order by less than this give the same warnings as in order; 0: no wait
    reorder_s: float = Field(0.0, ge=0, le=60)


class RegistryConfig(_Strict):
    regions: Path
    sensors: Path

    @classmethod
    def sample(cls) -> RegistryConfig:
        """The sample district's registries (ews/sample), as the demo and the tests use them."""
        return cls(regions=sample_dir() / "regions.yaml", sensors=sample_dir() / "sensors.yaml")

    def load(self) -> Registries:
        """Both registries, every sensor checked against the regions."""
        regions = RegionRegistry.load(self.regions)
        return Registries(regions, SensorRegistry.load(self.sensors, regions))


class Registries(NamedTuple):
    regions: RegionRegistry
    sensors: SensorRegistry


class HttpRequestTemplate(_Strict):
    """An HTTP request with {placeholders} (the SMS gateway channel); see docs/channels.md."""

    method: Literal["GET", "POST", "PUT"] = "POST"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    # json: a mapping sent as JSON; form: a mapping sent url-encoded; text: a string as is
    body_format: Literal["json", "form", "text"] = "json"
    body: dict[str, Any] | str | None = None
    # success: an HTTP status in success_status and, if success_field (a dotted path into the
    # JSON reply) is set, its value among success_values
    success_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    success_field: str | None = None
    success_values: list[str] = Field(default_factory=lambda: ["0", "OK", "ok", "success"])
    # values of success_field that mean "try again later" (e.g. the gateway's rate limit)
    retry_values: list[str] = Field(default_factory=list)


class ChannelConfig(_Strict):
    name: str
    type: Literal[
        "console", "webhook", "wecom", "dingtalk", "feishu", "smtp", "sms", "devices",
        "alertmanager", "cap",
    ]
    url: str | None = None
    secret_env: str | None = None
    timeout_s: float = Field(5.0, gt=0)
    max_attempts: int = Field(8, ge=1)
    backoff_s: float = Field(0.5, gt=0)
    max_backoff_s: float = Field(60.0, gt=0)
    # the channels below: fields per type are listed in CHANNEL_FIELDS and docs/channels.md
    language: Literal["zh-CN", "en"] = "zh-CN"
    token_env: str | None = None  # robot key / access_token / hook id, never in the file
    msgtype: Literal["text", "markdown"] = "markdown"
    mention: bool = False  # robots: @ the recipients by phone
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password_env: str | None = None
    sender: str | None = None  # smtp: From address; cap: the CAP sender id
    sender_name: str | None = None
    ca_file: Path | None = None  # a private CA to trust instead of the system's
    request: HttpRequestTemplate | None = None
    devices: Path | None = None  # the device registry (sirens, displays, speakers)
    topic_prefix: str = "ews-out/devices"
    ttl_s: float | None = Field(None, gt=0)  # validity of commands, alerts, CAP messages
    generator_url: str | None = None  # "{id}" is replaced by the warning id
    db: Path | None = None  # cap: the SQLite file of issued CAP messages
    listen: str | None = None  # cap: "host:port" to serve the Atom feed on
    base_url: str | None = None  # cap: the feed's public address
    contact: str | None = None  # cap: <contact> of every message

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            split_listen(v, lowest=0)
        return v

    @model_validator(mode="after")
    def _fields_of_type(self) -> ChannelConfig:
        # only type-specific fields are policed; any other field applies to every type
        specific = frozenset().union(*CHANNEL_FIELDS.values())
        stray = sorted((self.model_fields_set & specific) - CHANNEL_FIELDS.get(self.type, frozenset()))
        if stray:
            raise ValueError(f"field(s) {', '.join(stray)} do not apply to a {self.type} channel")
        return self


_ROBOT = frozenset({"url", "token_env", "secret_env", "msgtype", "mention"})
CHANNEL_FIELDS: dict[str, frozenset[str]] = {
    "console": frozenset(),
    "webhook": frozenset({"url", "secret_env"}),
    "wecom": _ROBOT - {"secret_env"},  # WeCom robots are not signed: the key is the secret
    "dingtalk": _ROBOT,
    "feishu": _ROBOT - {"mention"},  # Feishu @-mentions need open_ids, which the registry lacks
    "smtp": frozenset({"host", "port", "security", "username", "password_env", "sender",
                       "sender_name", "ca_file"}),
    "sms": frozenset({"request", "secret_env", "ca_file"}),
    "devices": frozenset({"url", "username", "password_env", "devices", "topic_prefix", "ttl_s"}),
    "alertmanager": frozenset({"url", "username", "password_env", "ttl_s", "generator_url", "ca_file"}),
    "cap": frozenset({"sender", "sender_name", "ttl_s", "db", "listen", "base_url", "contact"}),
}


class LevelTimers(_Strict):
    """Wall-clock timers of an unacknowledged warning at one level (None: never)."""

    remind_s: float | None = Field(None, gt=0)
    escalate_s: float | None = Field(None, gt=0)


LevelName = Literal["blue", "yellow", "orange", "red"]


def default_timers() -> dict[LevelName, LevelTimers]:
    # the higher the level, the sooner a silent duty desk is reminded and bypassed
    return {
        "blue": LevelTimers(remind_s=1800, escalate_s=3600),
        "yellow": LevelTimers(remind_s=1200, escalate_s=1800),
        "orange": LevelTimers(remind_s=600, escalate_s=900),
        "red": LevelTimers(remind_s=300, escalate_s=600),
    }


class RateLimit(_Strict):
    """Token bucket of one channel: `per_s` messages a second on average, `burst` at once."""

    per_s: float = Field(gt=0)
    burst: int = Field(1, ge=1)


class NotifierConfig(_Strict):
    routing: Path | None = None  # None: the packaged default policy
    language: Literal["zh-CN", "en"] = "zh-CN"
    channels: list[ChannelConfig] = Field(
        default_factory=lambda: [ChannelConfig(name="console", type="console")]
    )
    roster: Path | None = None  # duty roster (值班表); None: the registry's contacts
    # a resolve is held this long (event time, or wall time when no readings flow) and a
    # re-raise within it cancels the resolve; 0 resolves at once
    quiet_s: float = Field(0.0, ge=0)
    # internal notifications wait this long (wall time) so several become one message per
    # recipient; 0 sends each at once
    group_window_s: float = Field(0.0, ge=0)
    # levels not listed keep their defaults; list one with nulls to switch its timers off
    timers: dict[LevelName, LevelTimers] = Field(default_factory=default_timers)
    # a message still undelivered this long after it was written is given up, and the
    # duty officer is told
    give_up_s: float = Field(3600.0, gt=0)
    rate_limits: dict[str, RateLimit] = Field(default_factory=dict)  # channel name -> bucket
    # channels delivered by one worker thread; every channel not listed gets its own
    worker_groups: list[list[str]] = Field(default_factory=list)


class ApiConfig(_Strict):
    """The HTTP API and duty dashboard (docs/api.md); served only when this section is present."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)  # 0: a free port (tests)
    tokens: Path  # YAML file of SHA-256 token hashes with role and region (docs/api.md)
    influx_timeout_s: float = Field(3.0, gt=0)  # readiness probe and readings for the chart


class ProfileDates(_Strict):
    """A rule profile in force every year between two month-days (inclusive, Beijing time)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    profile: str
    from_: str = Field(alias="from", pattern=r"^\d{2}-\d{2}$", description="e.g. 04-15")
    to: str = Field(pattern=r"^\d{2}-\d{2}$", description="e.g. 10-15; may wrap over the new year")

    @model_validator(mode="after")
    def _dates(self) -> ProfileDates:
        from rules.profiles import month_day

        month_day(self.from_)
        month_day(self.to)
        return self


class RuleEngineConfig(_Strict):
    """Running the rules: hot reload, profiles by date or by hand, rebuild, no-data timer."""

    reload_interval_s: float = Field(2.0, ge=0)  # poll rule files this often; 0: no hot reload
    calendar: list[ProfileDates] = Field(default_factory=list)  # e.g. 汛期 04-15 .. 10-15
    profiles: list[str] = Field(default_factory=list)  # chosen by hand (a special event), last
    rebuild: bool = True  # rebuild detector state from InfluxDB history on start
    rebuild_lookback_h: float = Field(26.0, gt=0)  # never read further back than this
    # a kind whose history could not be read at start is tried again this often
    late_rebuild_interval_s: float = Field(30.0, gt=0)
    nodata_interval_s: float = Field(10.0, gt=0)  # how often silence is judged (wall clock)
    feed_down_after_s: float = Field(30.0, ge=0)  # broker lost this long: one feed-down warning


class Config(_Strict):
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    influxdb: InfluxConfig = Field(default_factory=InfluxConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    registries: RegistryConfig
    rules: Path | None = None  # file or folder; None: the packaged defaults
    # a profile's files apply on top of the base rules (e.g. "guangdong": rainstorm without blue)
    rules_profile: str | None = None
    rule_engine: RuleEngineConfig = Field(default_factory=RuleEngineConfig)
    state_dir: Path = Path(".state/pipeline")
    notifiers: NotifierConfig = Field(default_factory=NotifierConfig)
    api: ApiConfig | None = None
    # pin the whole process to these CPUs (ews/affinity.py); None: wherever the scheduler likes
    cpus: list[int] | None = Field(None, min_length=1)

    @field_validator("cpus")
    @classmethod
    def _cpus_of_this_host(cls, cpus: list[int] | None) -> list[int] | None:
        if cpus is not None:
            affinity.check(cpus)
        return cpus

    @property
    def spool_dir(self) -> Path:
        return Path(self.ingest.spool_dir or Path(self.state_dir) / "spool")

    def resolve_paths(self, base: Path) -> Config:
        def r(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        c = self.model_copy(deep=True)
        c.registries.regions = r(c.registries.regions)  # type: ignore[assignment]
        c.registries.sensors = r(c.registries.sensors)  # type: ignore[assignment]
        c.rules = r(c.rules)
        c.state_dir = r(c.state_dir)  # type: ignore[assignment]
        c.ingest.spool_dir = r(c.ingest.spool_dir)
        c.influxdb.ca_file = r(c.influxdb.ca_file)
        if c.mqtt.tls is not None:
            c.mqtt.tls.ca_file = r(c.mqtt.tls.ca_file)  # type: ignore[assignment]
            c.mqtt.tls.cert_file = r(c.mqtt.tls.cert_file)
            c.mqtt.tls.key_file = r(c.mqtt.tls.key_file)
        c.notifiers.routing = r(c.notifiers.routing)
        c.notifiers.roster = r(c.notifiers.roster)
        for ch in c.notifiers.channels:
            ch.devices, ch.db, ch.ca_file = r(ch.devices), r(ch.db), r(ch.ca_file)
        if c.api is not None:
            c.api.tokens = r(c.api.tokens)  # type: ignore[assignment]
        return c


def load_config(path: str | Path) -> Config:
    p = Path(path)
    return load_model(Config, p).resolve_paths(p.parent.resolve())


def sample_dir() -> Path:
    return Path(__file__).parent / "sample"
