"""Mutated payloads through the decode path: every message ends as readings or as reasons.

Valid payloads of every accepted shape (single readings, native batches, SenML on sensor and
gateway topics, status) are mutated in structure (a value swapped for one of another type or
an edge magnitude, a field dropped or added, a list grown), in bytes (flipped, cut, NaN or a
stray brace put in) and in topic. A message that raises inside the processor is not lost (the
collector isolates it as `processing_failed`), but it costs its whole batch a second pass and
tells the sender nothing useful: each must instead be stored, kept as unregistered, counted as
a status, or rejected with a reason and a detail. Seeds are fixed so a failure reproduces.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from ews.regions import RegionRegistry
from ews.sensors import Sensor, SensorRegistry
from ingest.lineproto import LineBuilder, unregistered_lines
from ingest.process import MessageProcessor, Outcome

from .mutation import mutate

NOW = 1_764_300_000_000
EDGES: list[Any] = [
    0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1e300, -1e300, 5e-324, -0.0, 0.5,
    1_764_300_000, 1_764_300_000.5, NOW, 99_999_999_999, 100_000_000_000, 2**28, 2**28 - 1, -(2**28),
    "", "1.5", "2025-11-28T03:20:00Z", "2025-11-28T03:20:00", "9999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00+00:00", "x" * 300, "urn:dev:id:", "::", "RG-A1:rain", None, True, False,
    [], {}, [1], {"v": 1}, [[[]]],
]
KEYS = ["sensor", "ts", "value", "unit", "battery", "rssi", "readings", "bn", "bt", "bu", "bv", "bver", "n", "u",
        "v", "vb", "vs", "t", "s", "extra"]
INSERTS = [b"NaN", b"-Infinity", b"\xff", b"1e999", b"\x00", b'"', b",", b"}", b"]", b"-", b"1" * 30]


def _topic(s: Sensor) -> str:
    c = s.community
    return f"ews/{c[:6]}/{c[:9]}/{c}/{s.kind}/{s.id}"


def _gateway(s: Sensor) -> str:
    return f"ews/{s.community[:6]}/{s.community[:9]}/batch/GW-1"


class Mutator:
    def __init__(self, seed: int, sensors: SensorRegistry):
        self.rng = random.Random(seed)
        self.sensors = sensors.sensors

    def valid(self) -> tuple[str, Any]:
        rng = self.rng
        s, other = rng.choice(self.sensors), rng.choice(self.sensors)
        t, g, ts = _topic(s), _gateway(s), NOW - rng.randint(0, 10**8)
        return rng.choice([
            (t, {"ts": ts, "value": 1.0}),
            (t, {"ts": ts // 1000, "value": 2, "unit": "mm", "battery": 80, "rssi": -70}),
            (g, {"readings": [{"sensor": s.id, "ts": ts, "value": 1.0}, {"sensor": other.id, "ts": ts, "value": 0.5}]}),
            (g, [{"sensor": s.id, "ts": ts, "value": 1.0, "unit": "cm"}]),
            (t, [{"bn": f"urn:dev:id:{s.id}:", "bt": ts / 1000, "bu": "mm"}, {"n": "", "v": 1.0},
                 {"n": "battery", "v": 90}]),
            (g, [{"bn": f"{s.id}:", "bt": ts / 1000}, {"n": s.kind, "v": 1.0, "t": -5},
                 {"n": "rssi", "v": -60, "t": -5}]),
            (t + "/status", {"online": True}),
            (t, [{"t": -3, "v": 1.0}, {"t": 0, "vb": True}]),
        ])

    def bytes(self, raw: bytes) -> bytes:
        rng, b = self.rng, bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            if not b:
                break
            i, r = rng.randrange(len(b)), rng.random()
            if r < 0.3:
                b[i] = rng.randrange(256)
            elif r < 0.5:
                del b[i:]
            elif r < 0.7:
                b[i:i] = rng.choice(INSERTS)
            else:
                del b[i]
        return bytes(b)

    def topic(self, topic: str) -> str:
        rng, parts = self.rng, topic.split("/")
        i, r = rng.randrange(len(parts)), rng.random()
        if r < 0.4:
            parts[i] = rng.choice(["", "x" * 200, "４４０１０６", "440106", "batch", "status", "rain", "\x00"])
        elif r < 0.7:
            del parts[i]
        else:
            parts.insert(i, rng.choice(["a", "batch", "440106001"]))
        return "/".join(parts)

    def messages(self, n: int) -> Iterator[tuple[bytes, bytes]]:
        for _ in range(n):
            topic, doc = self.valid()
            r = self.rng.random()
            if r < 0.5:
                payload = orjson.dumps(mutate(self.rng, doc, EDGES, KEYS))
            elif r < 0.8:
                payload = self.bytes(orjson.dumps(doc))
            else:
                payload, topic = orjson.dumps(doc), self.topic(topic)
            yield topic.encode(), payload  # as paho delivers them


def _rows(o: Outcome) -> list[tuple[int, int, float]]:
    return sorted(zip(o.sensor.tolist(), o.ts_ms.tolist(), o.value.tolist(), strict=True))


@pytest.mark.parametrize("policy", ["reject", "store"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_mutated_message_ends_as_readings_or_reasons(
    mini_sensors: SensorRegistry, mini_regions: RegionRegistry, seed: int, policy: str,
) -> None:
    proc = MessageProcessor(mini_sensors, mini_regions, unknown_sensor=policy,
                            allowed_lateness_s=2 * 86400, late_policy="reject" if seed % 2 else "store")
    builder = LineBuilder(mini_sensors)
    seen: Counter[str] = Counter()
    for n, msg in enumerate(Mutator(seed, mini_sensors).messages(2500)):
        o = proc.process([msg], NOW, keep_ms=30 * 86_400_000 if n % 2 else None)
        accounted = len(o) + len(o.unregistered) + o.status_messages + len(o.rejections)
        assert accounted > 0, f"message {msg!r} vanished"
        for rejection in o.rejections:
            assert rejection.detail, rejection
            seen[rejection.reason] += 1
        lines = builder.build(o.sensor, o.ts_ms, o.value, o.battery, o.rssi)
        lines += unregistered_lines([(u.sensor, u.kind, u.community, u.ts_ms, u.value) for u in o.unregistered])
        assert lines.count(b"\n") == len(o) + len(o.unregistered), msg
        for line in lines.splitlines():
            fields, _, ts = line.rpartition(b" ")
            assert ts.isdigit() and 0 < int(ts) < NOW + 86_400_000, line  # a time InfluxDB can hold
            values = fields.lower().partition(b" ")[2]
            assert b"nan" not in values and b"inf" not in values, line
    # the mutations reach deep: timestamps, SenML records, units, regions, not only bad JSON
    assert len(seen) >= 18, seen


@pytest.mark.parametrize("policy", ["reject", "store"])
def test_a_batch_gives_what_its_messages_give_one_by_one(
    mini_sensors: SensorRegistry, mini_regions: RegionRegistry, policy: str,
) -> None:
    """The batch shares caches (topics, gateways' sensors) that single messages start without."""
    warm = MessageProcessor(mini_sensors, mini_regions, unknown_sensor=policy)
    msgs = list(Mutator(7, mini_sensors).messages(2000))
    for k in range(0, len(msgs), 100):
        chunk = msgs[k:k + 100]
        together = warm.process(chunk, NOW, live=False)
        rows: list[tuple[int, int, float]] = []
        reasons: Counter[str] = Counter()
        unregistered = 0
        for m in chunk:
            alone = MessageProcessor(mini_sensors, mini_regions, unknown_sensor=policy)
            o = alone.process([m], NOW, live=False)
            rows += _rows(o)
            reasons.update(r.reason for r in o.rejections)
            unregistered += len(o.unregistered)
        assert _rows(together) == sorted(rows)
        assert Counter(r.reason for r in together.rejections) == reasons
        assert len(together.unregistered) == unregistered
