"""The load: who publishes (a generated district of N sensors, or a registry's own sensors) and
the publisher processes that send their readings at a steady rate.

Each publisher process owns a slice of the sensors and one lean QoS 1 connection
(mqttwire.py); it sends each second's share of the rate in bursts, every reading stamped with
the wall clock (one millisecond later than the sensor's previous reading where two would
collide, so every reading is a distinct point in InfluxDB and loss can be counted back).
Processes live across the steps of a stepped run and report what they sent and what the
broker acknowledged through shared counters.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import ssl
import time
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path
from typing import Any

import yaml

from ews.config import MqttConfig, secret
from ews.sensors import SensorRegistry
from simulators.mqttwire import LeanPublisher

DISTRICT = "440106"
PROBE_STREET = "440106999"
PER_COMMUNITY = 10
COMMUNITIES_PER_STREET = 20
# kinds of the generated sensors, by index mod 10, and what each reads on a quiet day
_KIND_CYCLE = ("rain", "rain", "rain", "water_level", "ponding", "ponding", "gas", "gas", "gas", "smoke")
_QUIET = {"rain": 0.0, "water_level": 5.0, "ponding": 0.0, "gas": 1.0, "smoke": 0.0}
_STATION = {"base_level": 5.0, "warning_level": 7.0, "guarantee_level": 8.0, "historical_max": 9.0}


@dataclass
class LoadSensors:
    """Topics and the payload tail (`,"value":...}`) of each load sensor; the probes apart."""

    topics: list[bytes]
    tails: list[bytes]
    probe_ids: list[str]
    probe_topics: list[bytes]
    sensor_filter: str  # InfluxQL regex matching every load and probe sensor id

    def __len__(self) -> int:
        return len(self.topics)


def _topic(district: str, street: str, community: str, kind: str, sid: str) -> bytes:
    return f"ews/{district}/{street}/{community}/{kind}/{sid}".encode()


def generate_district(n: int, probes: int, folder: Path) -> tuple[Path, Path, LoadSensors]:
    """Region and sensor registries of N load sensors and `probes` probe gas sensors (each in a
    community of its own, so its warnings travel alone); returns their paths and the load."""
    if n < 1 or n > 999 * COMMUNITIES_PER_STREET * PER_COMMUNITY - 1:
        raise ValueError(f"between 1 and {998 * COMMUNITIES_PER_STREET * PER_COMMUNITY} load sensors")
    folder.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(n)
    duty = [{"id": "LT-DUTY", "name": "load test duty desk", "role": "duty_officer", "channels": ["console"]}]
    streets: dict[str, list[str]] = {}
    sensors: list[dict[str, Any]] = []
    topics: list[bytes] = []
    tails: list[bytes] = []
    for i in range(n):
        community_no = i // PER_COMMUNITY
        street = f"{DISTRICT}{community_no // COMMUNITIES_PER_STREET + 1:03d}"
        community = f"{street}{community_no % COMMUNITIES_PER_STREET + 1:03d}"
        streets.setdefault(street, [])
        if community not in streets[street]:
            streets[street].append(community)
        kind = _KIND_CYCLE[i % len(_KIND_CYCLE)]
        sid = f"LT-{i:06d}"
        lat, lon = round(23.10 + 0.15 * rnd.random(), 5), round(113.29 + 0.17 * rnd.random(), 5)
        s: dict[str, Any] = {"id": sid, "kind": kind, "community": community, "lat": lat, "lon": lon}
        if kind == "water_level":
            s["params"] = dict(_STATION)
        sensors.append(s)
        topics.append(_topic(DISTRICT, street, community, kind, sid))
        tails.append(b',"value":%r}' % _QUIET[kind])
    probe_ids = [f"LT-P{k:04d}" for k in range(probes)]
    streets[PROBE_STREET] = [f"{PROBE_STREET}{k + 1:03d}" for k in range(probes)]
    for k, pid in enumerate(probe_ids):
        sensors.append({"id": pid, "kind": "gas", "community": streets[PROBE_STREET][k], "lat": 23.15, "lon": 113.37})
    regions = {"districts": [{
        "code": DISTRICT, "name": "天河区 (load test)", "contacts": duty,
        "streets": [{"code": st, "name": f"street {st[-3:]}", "contacts": duty,
                     "communities": [{"code": c, "name": f"community {c[-6:]}", "contacts": duty} for c in comms]}
                    for st, comms in streets.items()],
    }]}
    regions_path, sensors_path = folder / "regions.yaml", folder / "sensors.yaml"
    regions_path.write_text(yaml.safe_dump(regions, allow_unicode=True, sort_keys=False), encoding="utf-8")
    sensors_path.write_text(yaml.safe_dump({"sensors": sensors}, allow_unicode=True, sort_keys=False), encoding="utf-8")
    probe_topics = [_topic(DISTRICT, PROBE_STREET, streets[PROBE_STREET][k], "gas", pid)
                    for k, pid in enumerate(probe_ids)]
    return regions_path, sensors_path, LoadSensors(topics, tails, probe_ids, probe_topics, "^LT-")


def registry_load(registry: SensorRegistry, n: int, probes: int) -> LoadSensors:
    """Load from a registry's own sensors (attaching to a running pipeline): its gas sensors
    serve as probes, the others (up to N) as load, each reading its quiet value."""
    gas = [s for s in registry.sensors if s.kind == "gas"][:probes]
    if not gas:
        raise ValueError("the registry has no gas sensor to probe latency with")
    probe_set = {s.id for s in gas}
    rest = [s for s in registry.sensors if s.id not in probe_set][:n]
    tails = []
    for s in rest:
        quiet = s.params.get("base_level", s.params.get("warning_level", 1.3) - 1.3) if s.kind == "water_level" \
            else _QUIET.get(s.kind, 0.0)
        tails.append(b',"value":%r}' % float(quiet))
    ids = "|".join(s.id for s in [*rest, *gas])
    return LoadSensors(
        [_topic(s.district, s.street, s.community, s.kind, s.id) for s in rest], tails,
        [s.id for s in gas], [_topic(s.district, s.street, s.community, s.kind, s.id) for s in gas],
        f"^({ids})$",
    )


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def of(cls, cfg: MqttConfig) -> Broker:
        t = cfg.tls
        return cls(cfg.host, cfg.port, cfg.username, secret(cfg.password_env),
                   str(t.ca_file) if t else None, str(t.cert_file) if t and t.cert_file else None,
                   str(t.key_file) if t and t.key_file else None)

    def connect(self, client_id: str) -> LeanPublisher:
        tls = None
        if self.ca_file is not None:
            tls = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                tls.load_cert_chain(self.cert_file, self.key_file)
        return LeanPublisher(self.host, self.port, client_id, self.username, self.password, tls)


def _publisher(
    k: int, broker: Broker, topics: list[bytes], tails: list[bytes], commands: Any, done: Any,
    counters: SynchronizedArray,
) -> None:
    """A publisher process: for each (rate, seconds, start_at) command, publish that share."""
    pub = broker.connect(f"ews-loadtest-{k}-{int(time.time())}")
    last = [0] * len(topics)
    j = 0
    n = len(topics)
    parent = os.getppid()
    try:
        while True:
            try:
                cmd = commands.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:
                    return  # the load test is gone: do not outlive it
                continue
            if cmd is None:
                return
            rate, seconds, start_at = cmd
            while (wait := start_at - time.time()) > 0:
                time.sleep(min(wait, 0.05))
            sent = 0
            while (elapsed := time.time() - start_at) < seconds:
                due = int(rate * elapsed) - sent
                if due <= 0:
                    time.sleep(0.002)
                    continue
                due = min(due, 2000)
                ms = int(time.time() * 1000)
                packets = []
                for _ in range(due):
                    i = j % n
                    j += 1
                    ts = ms if ms > last[i] else last[i] + 1
                    last[i] = ts
                    packets.append((topics[i], b'{"ts":%d%s' % (ts, tails[i])))
                pub.publish_many(packets)
                sent += due
                counters[0], counters[1] = pub.sent, pub.acked
            pub.wait_acked(120)
            counters[0], counters[1] = pub.sent, pub.acked
            done.put(k)
    finally:
        pub.close()


@dataclass
class Fleet:
    """Publisher processes sharing the load sensors; `run` is one step at one rate."""

    broker: Broker
    load: LoadSensors
    processes: int
    _procs: list[Any] = field(default_factory=list)
    _commands: list[Any] = field(default_factory=list)
    _counters: list[Any] = field(default_factory=list)
    _done: Any = None

    def start(self) -> None:
        ctx = mp.get_context("spawn")  # the parent runs threads; a forked child could inherit held locks
        self._done = ctx.Queue()
        for k in range(self.processes):
            q = ctx.Queue()
            counters = ctx.Array("q", 2, lock=False)
            p = ctx.Process(
                target=_publisher, args=(k, self.broker, self.load.topics[k :: self.processes],
                                         self.load.tails[k :: self.processes], q, self._done, counters),
                name=f"loadtest-publisher-{k}", daemon=True,
            )
            p.start()
            self._procs.append(p)
            self._commands.append(q)
            self._counters.append(counters)

    def begin(self, rate: float, seconds: float, start_at: float) -> None:
        for q in self._commands:
            q.put((rate / self.processes, seconds, start_at))

    def totals(self) -> tuple[int, int]:
        """(sent, acknowledged) over all processes since they started."""
        return sum(int(c[0]) for c in self._counters), sum(int(c[1]) for c in self._counters)

    def wait_done(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        finished = 0
        while finished < self.processes:
            if not any(p.is_alive() for p in self._procs):
                return False
            try:
                self._done.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                finished += 1
            except Exception:
                if time.monotonic() > deadline:
                    return False
        return True

    def alive(self) -> bool:
        return all(p.is_alive() for p in self._procs)

    def stop(self) -> None:
        for q in self._commands:
            q.put(None)
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
