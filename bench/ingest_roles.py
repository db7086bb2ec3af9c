"""The subscribers bench/ingest.py compares, each run in its own process on the same queued stream.

    python -P bench/ingest_roles.py ROLE --port P --client-id C --messages N --readings R [...]

Roles:
- bare: paho-mqtt, persistent session, QoS 1 with manual acknowledgement, `orjson.loads` of
  every payload and `client.ack` from the callback; stores nothing (the client library's ceiling);
- bare-tuned: the same on the collector's paho client (ingest/mqttclient.py: the socket
  read in chunks, PUBLISH packets cut from them and handed over raw, every waiting packet
  read per wake-up, acknowledgements in bulk every 500 messages): the ceiling of the receive
  path the pipeline itself uses;
- gmqtt: the same with gmqtt (asyncio) under MQTT 5, which acknowledges when an async callback
  returns (under 3.1.1 gmqtt always acknowledges before the callback runs);
- batching: paho-mqtt, QoS 1 with paho's automatic acknowledgement, `json.loads`, line protocol
  built with an f-string in the callback and POSTed to InfluxDB's /write every 5,000 readings
  (what a user would write);
- pipeline: ews.pipeline.Pipeline with the sample district, rules on (Guangdong profile);
- ingest-only: the same pipeline with its rules stage switched off, to tell ingest's own cost
  from the rules engine's.

Each prints one line `BENCH {json}` with the wall time of its connect and of its last message
done (stored where it stores), the counts, the CPU time of its process in between, and its
peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


def peak_rss_mb() -> float:
    # VmHWM starts afresh at exec; ru_maxrss would carry the parent's peak over
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_CPU_AT_START = [0.0]
_THREAD_CPU_AT_START: dict[int, float] = {}


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each live Python thread, by its ident (with its name)."""
    out = {}
    for t in threading.enumerate():
        if t.ident is not None:
            with contextlib.suppress(OSError):  # ended in between
                out[t.ident] = (t.name, time.clock_gettime(time.pthread_getcpuclockid(t.ident)))
    return out


def started() -> float:
    """The wall time a subscriber starts being timed; its CPU time is counted from here too."""
    _CPU_AT_START[0] = time.process_time()
    _THREAD_CPU_AT_START.clear()
    _THREAD_CPU_AT_START.update({k: cpu for k, (_, cpu) in _thread_cpu().items()})
    return time.time()


def thread_cpu_since_start() -> dict[str, float]:
    """CPU seconds each thread spent since `started()`, by thread name (threads of one name summed;
    a thread that ended before this is in the process's total only)."""
    out: dict[str, float] = {}
    for ident, (name, cpu) in _thread_cpu().items():
        name = name.split("-client-")[0]  # paho's network thread is named after the run's client id
        out[name] = out.get(name, 0.0) + cpu - _THREAD_CPU_AT_START.get(ident, 0.0)
    return out


def report(**fields: Any) -> None:
    fields["cpu_s"] = time.process_time() - _CPU_AT_START[0]  # all threads of this process
    fields["rss_mb"] = peak_rss_mb()
    print("BENCH " + orjson.dumps(fields).decode(), flush=True)


def readings_in(doc: Any) -> int:
    if isinstance(doc, dict) and "readings" in doc:
        return len(doc["readings"])
    return 1


def paho_client(client_id: str, manual_ack: bool) -> Any:
    import paho.mqtt.client as mqtt

    return mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                       protocol=mqtt.MQTTv311, clean_session=False, manual_ack=manual_ack)


def run_bare(a: argparse.Namespace) -> None:
    tuned = a.role == "bare-tuned"
    if tuned:
        import paho.mqtt.client as mqtt

        from ingest.mqttclient import Client, ack_many

        c = Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=a.client_id,
                   protocol=mqtt.MQTTv311, clean_session=False, manual_ack=True)
    else:
        c = paho_client(a.client_id, manual_ack=True)
    done = threading.Event()
    state = {"messages": 0, "readings": 0, "end": 0.0}
    unacked: list[int] = []

    def count(doc: Any) -> None:
        state["messages"] += 1
        state["readings"] += readings_in(doc)
        if state["messages"] >= a.messages:
            if tuned:
                ack_many(c, unacked)
            state["end"] = time.time()
            done.set()

    def on_message(client: Any, _ud: Any, msg: Any) -> None:
        doc = orjson.loads(msg.payload)
        client.ack(msg.mid, msg.qos)
        count(doc)

    def on_publish_raw(_topic: bytes, payload: bytes, mid: int) -> None:
        doc = orjson.loads(payload)
        unacked.append(mid)
        if len(unacked) >= 500:
            ack_many(c, unacked)
            unacked.clear()
        count(doc)

    c.on_message = on_message
    if tuned:
        c.on_publish_raw = on_publish_raw
    t0 = started()
    c.connect("127.0.0.1", a.port)
    c.loop_start()
    done.wait(a.timeout)
    report(role=a.role, start=t0, end=state["end"] or time.time(), messages=state["messages"],
           readings=state["readings"])
    c.disconnect()
    c.loop_stop()


def run_gmqtt(a: argparse.Namespace) -> None:
    import gmqtt

    async def main() -> None:
        done = asyncio.Event()
        state = {"messages": 0, "readings": 0, "end": 0.0}
        c = gmqtt.Client(a.client_id, clean_session=False, optimistic_acknowledgement=False,
                         session_expiry_interval=3600)

        async def on_message(_c: Any, _topic: str, payload: bytes, _qos: int, _props: Any) -> int:
            doc = orjson.loads(payload)
            state["messages"] += 1
            state["readings"] += readings_in(doc)
            if state["messages"] >= a.messages:
                state["end"] = time.time()
                done.set()
            return 0  # PUBACK goes out when this returns

        c.on_message = on_message
        t0 = started()
        await c.connect("127.0.0.1", a.port, version=gmqtt.constants.MQTTv50)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), a.timeout)
        report(role="gmqtt", start=t0, end=state["end"] or time.time(), messages=state["messages"],
               readings=state["readings"])
        await c.disconnect()

    asyncio.run(main())


def run_batching(a: argparse.Namespace) -> None:
    import httpx

    from ews.config import RegistryConfig

    sensors = RegistryConfig.sample().load().sensors
    where = {s.id: s for s in sensors.sensors}
    http = httpx.Client(base_url=a.influx, timeout=30)
    http.post("/query", data={"q": f'CREATE DATABASE "{a.db}"'})
    c = paho_client(a.client_id, manual_ack=False)
    done = threading.Event()
    buf: list[str] = []
    state = {"messages": 0, "readings": 0, "end": 0.0}

    def flush() -> None:
        http.post("/write", params={"db": a.db, "precision": "ms"}, content="".join(buf).encode())
        buf.clear()

    def line(sensor: str, ts: int, value: float) -> str:
        s = where[sensor]
        return (f"{s.kind},community={s.community},district={s.district},sensor={s.id},street={s.street} "
                f"value={float(value)} {ts}\n")

    def on_message(_c: Any, _ud: Any, msg: Any) -> None:
        doc = json.loads(msg.payload)
        if "readings" in doc:
            for r in doc["readings"]:
                buf.append(line(r["sensor"], r["ts"], r["value"]))
        else:
            buf.append(line(msg.topic.rsplit("/", 1)[1], doc["ts"], doc["value"]))
        state["messages"] += 1
        state["readings"] += readings_in(doc)
        if len(buf) >= 5000:
            flush()
        if state["messages"] >= a.messages:
            if buf:
                flush()
            state["end"] = time.time()
            done.set()

    c.on_message = on_message
    t0 = started()
    c.connect("127.0.0.1", a.port)
    c.loop_start()
    done.wait(a.timeout)
    report(role="batching", start=t0, end=state["end"] or time.time(), messages=state["messages"],
           readings=state["readings"])
    c.disconnect()
    c.loop_stop()


def pipeline_config(port: int, client_id: str, influx: str, db: str, state: Path, cpus: list[int] | None = None,
                    **mqtt: Any) -> Any:
    """The benchmarked pipeline: the sample district, its default rules (Guangdong profile),
    console delivery, pinned to `cpus` when given; `mqtt` adds MqttConfig fields."""
    from ews.config import (
        ChannelConfig,
        Config,
        InfluxConfig,
        IngestConfig,
        MqttConfig,
        NotifierConfig,
        RegistryConfig,
    )

    return Config(
        mqtt=MqttConfig(port=port, client_id=client_id, subscriptions=["ews/#"], **mqtt),
        influxdb=InfluxConfig(url=influx, database=db),
        # the stream reaches 30 h back: every reading is evaluated, none stored as too late to warn on
        ingest=IngestConfig(spool_dir=state / "spool", allowed_lateness_s=2 * 86400),
        registries=RegistryConfig.sample(),
        rules_profile="guangdong",
        state_dir=state,
        notifiers=NotifierConfig(channels=[ChannelConfig(name="console", type="console")]),
        cpus=cpus,
    )


def run_pipeline(a: argparse.Namespace) -> None:
    from ews.pipeline import Pipeline

    cpus = [int(c) for c in a.cpus.split(",")] if a.cpus else None
    p = Pipeline(pipeline_config(a.port, a.client_id, a.influx, a.db, Path(a.state), cpus))
    if a.role == "ingest-only":
        p.collector.on_readings = None
    # end to end from its connect, as for every subscriber: the rules' start-up rebuild from
    # InfluxDB (an empty database here) comes before, and is the rules', not ingest's
    col = p.collector
    connect = col.start
    connected_at: list[float] = []

    def timed_start(*args: Any, **kwargs: Any) -> None:
        connected_at.append(started())
        connect(*args, **kwargs)

    col.start = timed_start  # type: ignore[method-assign]
    # the end is taken the moment the last message is done (stored, and evaluated unless the
    # rules are off), as the raw baseline's is when its last write returns: checked after each
    # batch the write thread completes and each the rules evaluate, not polled
    ended: list[float] = []
    done = threading.Event()

    def check_after(step: Callable[..., None]) -> Callable[..., None]:
        def checked(*args: Any) -> None:
            try:
                step(*args)
            finally:
                if not done.is_set() and col.stats["messages"] >= a.messages and not col.pending:
                    ended.append(time.time())
                    done.set()
        return checked

    col._complete = check_after(col._complete)  # type: ignore[method-assign]
    col._evaluate = check_after(col._evaluate)  # type: ignore[method-assign]
    p.start()
    t0 = connected_at[0]
    done.wait(a.timeout)
    end = min(ended) if ended else time.time()
    report(role=a.role, start=t0, end=end, messages=col.stats["messages"], readings=col.stats["readings"],
           spooled=col.stats["spooled"], rejected=col.stats["rejected"], batches=col.stats["batches"],
           threads=thread_cpu_since_start())
    p.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["bare", "bare-tuned", "gmqtt", "batching", "pipeline", "ingest-only"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--messages", type=int, required=True)
    ap.add_argument("--influx", default="")
    ap.add_argument("--db", default="")
    ap.add_argument("--state", default="")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--cpus", default="", help="pipeline roles: pin the process to these CPUs (comma separated)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    runs = {"bare": run_bare, "bare-tuned": run_bare, "gmqtt": run_gmqtt, "batching": run_batching,
            "pipeline": run_pipeline, "ingest-only": run_pipeline}
    runs[a.role](a)


if __name__ == "__main__":
    main()
