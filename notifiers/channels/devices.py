"""Commands to sirens, LED displays and speakers over MQTT, on `ews-out/devices/{device_id}`.

The device registry says which devices serve the warning's community and what each does at
the warning's level. Every command is a JSON object (version 1) keyed by warning id, so a
device can hold several warnings and show the highest; a lowered warning sends the new
level's command, or a clear where the device has none for it, and a lifted one clears it.
Commands carry an expiry (also as the MQTT 5 message-expiry interval): a device that comes
back online later must not sound a siren for a warning already over. Published at QoS 1 and
not retained; the retained warning state lives on `ews-out/warnings/...`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ews.config import ChannelConfig, secret
from ews.levels import Level
from notifiers.channels.base import Channel, DeliveryError, Notification, RetryPolicy
from notifiers.channels.device_registry import DeviceRegistry, Target
from notifiers.channels.memo import AcceptedParts
from notifiers.channels.texts import ChannelTexts, packaged
from notifiers.publish import rfc3339

log = logging.getLogger(__name__)

VERSION = 1
LEVEL_COLOUR = {"blue": "blue", "yellow": "yellow", "orange": "orange", "red": "red"}


def command_payload(
    note: Notification, target: Target, texts: ChannelTexts, now_ms: int, ttl_s: float,
) -> dict[str, Any]:
    w = note.warning
    clear = target.command is None
    expires_ms = now_ms + int(ttl_s * 1000)
    out: dict[str, Any] = {
        "version": VERSION,
        "device": target.device.id,
        "type": target.type,
        "command": "clear" if clear else "activate",
        "warning_id": w.get("id"),
        "level": w.get("level"),
        "level_zh": w.get("level_zh"),
        "kind": w.get("kind"),
        "transition": note.transition,
        "drill": bool(note.drill or w.get("drill", False)),
        "idempotency_key": f"{note.idempotency_key}/{target.device.id}",
        "issued_ts": rfc3339(now_ms),
        "expires_ts": rfc3339(expires_ms),
        "expires_ts_ms": expires_ms,
    }
    if clear:
        out["text"] = texts.render("display_clear", note) if target.type == "display" else ""
        return out
    cmd = target.command
    assert cmd is not None
    if target.type == "siren" and target.pattern is not None:
        out["siren"] = {"pattern": cmd.pattern, **target.pattern.model_dump()}
    elif target.type == "display":
        out["text"] = texts.render("display", note)
        out["display"] = {"colour": LEVEL_COLOUR.get(str(w.get("level")), "white"), "flash": cmd.flash}
    elif target.type == "speaker":
        out["text"] = texts.render("speaker", note)
        out["speaker"] = {"repeat": cmd.repeat}
    return out


class DeviceChannel(Channel):
    def __init__(
        self, name: str, registry: DeviceRegistry, *, host: str = "127.0.0.1", port: int = 1883,
        username: str | None = None, password: str | None = None, topic_prefix: str = "ews-out/devices",
        ttl_s: float | None = None, texts: ChannelTexts | None = None, timeout_s: float = 5.0,
        retry: RetryPolicy | None = None, clock: Callable[[], float] = time.time,
    ):
        self.name = name
        self.registry = registry
        self.host, self.port = host, port
        self.topic_prefix = topic_prefix.rstrip("/")
        self.ttl_s = ttl_s if ttl_s is not None else registry.file.command_ttl_s
        self.texts = texts or packaged("zh-CN")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self._accepted = AcceptedParts()
        self._connected = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"ews-devices-{name}", protocol=mqtt.MQTTv5,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._started = False
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> DeviceChannel:
        if cfg.devices is None:
            raise ValueError(f"devices channel {cfg.name} needs a device registry (devices: file)")
        u = urlsplit(cfg.url or "mqtt://127.0.0.1:1883")
        if u.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"devices channel {cfg.name}: url must be mqtt://host:port")
        return cls(cfg.name, DeviceRegistry.load(cfg.devices), host=u.hostname or "127.0.0.1",
                   port=u.port or 1883, username=cfg.username, password=secret(cfg.password_env),
                   topic_prefix=cfg.topic_prefix, ttl_s=cfg.ttl_s, texts=packaged(cfg.language),
                   timeout_s=cfg.timeout_s, retry=RetryPolicy.from_config(cfg))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if not rc.is_failure:
            self._connected.set()
        else:
            log.error("devices %s: broker refused the connection: %s", self.name, rc)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self._connected.clear()

    def _ensure_connected(self) -> None:
        with self._lock:
            if not self._started:
                try:
                    self._client.connect_async(self.host, self.port, keepalive=30)
                except (OSError, ValueError) as exc:
                    raise DeliveryError(f"devices {self.name}: cannot connect: {exc!r}", retryable=True) from exc
                self._client.loop_start()  # reconnects by itself from now on
                self._started = True
        if not self._connected.wait(self.timeout_s):
            raise DeliveryError(f"devices {self.name}: not connected to {self.host}:{self.port}", retryable=True)

    def topic(self, device_id: str) -> str:
        return f"{self.topic_prefix}/{device_id}"

    def targets(self, note: Notification) -> list[Target]:
        w = note.warning
        community = str((w.get("region") or {}).get("community", {}).get("code", ""))
        level = Level.parse(str(w.get("level", "blue")))
        peak = Level.parse(str(w.get("peak_level", w.get("level", "blue"))))
        return self.registry.targets(community, level, clear=note.transition == "resolve", peak=peak)

    def send(self, note: Notification) -> None:
        if note.notice != "transition":
            # reminders, escalations and failure notices are for staff, not for sirens
            return
        targets = self.targets(note)
        if not targets:
            log.debug("devices %s: no device serves %s at this level", self.name, note.warning.get("id"))
            return
        self._ensure_connected()
        now_ms = int(self.clock() * 1000)
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = max(1, math.ceil(self.ttl_s))
        for t in targets:
            part = f"{note.idempotency_key}/{t.device.id}"
            if part in self._accepted:
                continue
            body = orjson.dumps(command_payload(note, t, self.texts, now_ms, self.ttl_s))
            info = self._client.publish(self.topic(t.device.id), body, qos=1, retain=False, properties=props)
            try:
                info.wait_for_publish(self.timeout_s)
            except (RuntimeError, ValueError) as exc:
                raise DeliveryError(f"devices {self.name}: publish to {t.device.id} failed: {exc}",
                                    retryable=True) from exc
            if not info.is_published():
                raise DeliveryError(f"devices {self.name}: broker did not acknowledge {t.device.id} "
                                    f"within {self.timeout_s} s", retryable=True)
            self._accepted.add(part)

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False
