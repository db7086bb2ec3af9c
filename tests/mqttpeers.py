"""The tests' own MQTT clients on the real broker: a publisher, and a watcher of the dead-letter
topic that collects every rejection the pipeline publishes."""

from __future__ import annotations

from typing import Any

import orjson
import paho.mqtt.client as mqtt

DEAD_LETTERS = "ews-out/rejected/#"


def publisher(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def dead_letters(port: int, client_id: str) -> tuple[mqtt.Client, list[dict[str, Any]]]:
    """A connected watcher and the list it fills: each dead letter's JSON, with its topic as
    `dl_topic`. Stop it with `loop_stop()`."""
    seen: list[dict[str, Any]] = []
    c = publisher(port, client_id)
    c.on_message = lambda _c, _u, msg: seen.append({**orjson.loads(msg.payload), "dl_topic": msg.topic})
    c.subscribe(DEAD_LETTERS, qos=1)
    return c, seen
