"""Ingest end to end: the pipeline against the client library's ceiling and a plain batching script.

    .venv/bin/python -P bench/ingest.py [--messages 200000] [--modes 1,100] [--runs 3] [--gmqtt] [--pin | --split]

In one invocation, on Mosquitto and InfluxDB started here on loopback (ews.servers, the
project's deploy/ configuration), for each mode (1 reading per message on per-sensor topics,
and 100 per message as gateway batches):

1. every subscriber's persistent session is created (QoS 1, `ews/#`), then the whole stream
   (200,000 readings of the sample district's 305 sensors, each at its kind's nominal
   interval, quiet weather: the last 30 hours in event-time order) is published
   once, before any subscriber connects: Mosquitto queues it
   for every session (max_queued_messages 0), so the publisher cannot be the bottleneck and
   all subscribers read the very same stream;
2. each subscriber (bench/ingest_roles.py) runs alone in its own process and drains its
   queue: a bare paho subscriber (decode + manual ack: the library's ceiling), a plain paho
   script writing batches of 5,000 to InfluxDB from its callback, and ews.pipeline.Pipeline
   with the sample rules on (`--pin`: pinned to one CPU, the `cpus` setting); for reference
   also the bare subscriber on the collector's own paho client ("bare-tuned"), the pipeline
   with its rules stage off ("ingest-only", pinned alike), and optionally gmqtt as a bare
   subscriber (when installed);
3. end to end = its connect to its last message done (for those that store: written to
   InfluxDB), then the readings are counted back in InfluxDB: `lost` = sent - counted;
4. its session is discarded, so that the broker holds only the queues of the run at hand
   (Mosquitto writes all it holds at every autosave, and pauses meanwhile).

InfluxDB's own ingest rate of the same readings as raw batched line protocol (batches of
5,000, the better of one and two writers) is measured in the same run for the 100-per-message
comparison. Before each subscriber and each baseline the script waits for InfluxDB to go idle
(it compacts what the previous one wrote in the background). Each mode is run `--runs` times,
every run with its own baselines: on a shared 2-core machine single figures move by tens of
percent, so the ratios are given per run and as their median. Prints a table (with the CPU
time each subscriber's process and InfluxDB spent per reading: on two shared cores that is
what the rates are made of), the pipeline roles' CPU by thread (decode, rules, paho's network
thread, writes; MainThread is this script's polling), and the ratios the design targets
(DESIGN §6), writes .state/bench/ingest.png.

`--split` places the servers as a host that keeps InfluxDB apart would (docs/operations.md,
"Sharing a host"): InfluxDB pinned to the first CPU this process may use, Mosquitto, the
publisher, every subscriber and the raw baseline's client to the others. InfluxDB then has
one core of its own in every run, the raw baseline's too, so the ratio says whether the
pipeline keeps the database busy, not how the two share the cores.

(-P keeps bench/ off the import path: this file would shadow the `ingest` package.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # as -P does

import importlib.util  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import orjson  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psutil  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from ews import affinity  # noqa: E402
from ews.config import RegistryConfig  # noqa: E402
from ews.sensors import Sensor, SensorRegistry  # noqa: E402
from ews.servers import InfluxServer, ManagedServer, influxdb, mosquitto  # noqa: E402
from simulators.mqttwire import LeanPublisher  # noqa: E402

ROLES_FILE = _HERE / "ingest_roles.py"
STEP_MS = 60_000
console = Console(width=160)


def quiet_value(s: Sensor, k: int) -> float:
    """Dry, calm readings: the rules evaluate every one and raise (almost) nothing."""
    if s.kind == "rain":
        return 0.1 if k % 10 == 0 else 0.0
    if s.kind == "water_level":
        return round(s.params.get("base_level", 5.0) + 0.01 * (k % 3), 2)
    if s.kind in ("ponding", "gas"):
        return float(k % 3)
    return 0.0


def stream(sensors: SensorRegistry, n: int, per_message: int) -> tuple[list[tuple[str, bytes]], bytes]:
    """The messages of the stream, and the same readings as line protocol for the raw baseline.

    Every sensor reports at its kind's nominal interval (gas every minute, rain, river and
    ponding every 5 minutes, smoke hourly), up to the last whole minute; the stream is the
    newest `n` readings of the district in event-time order (about 30 hours of it for the
    sample's 305 sensors), as a gateway flushing its buffer or a backlog after an outage.
    """
    ss = sensors.sensors
    end = (int(time.time() * 1000) // STEP_MS) * STEP_MS - STEP_MS
    step = [int(sensors.kinds[s.kind].interval_s * 1000) for s in ss]
    per_hour = sum(3_600_000 / st for st in step)
    span = int(n / per_hour * 3_600_000) + max(step)
    every = []
    for i, st in enumerate(step):
        count = span // st + 1
        every += [(end - (count - 1 - j) * st, i, j) for j in range(count)]
    every.sort()
    readings = [(ss[i], t, quiet_value(ss[i], j)) for t, i, j in every[-n:]]
    lines = "".join(f"{s.kind},community={s.community},district={s.district},sensor={s.id},street={s.street} "
                    f"value={float(v)} {t}\n" for s, t, v in readings).encode()
    if per_message == 1:
        msgs = [(f"ews/{s.district}/{s.street}/{s.community}/{s.kind}/{s.id}", orjson.dumps({"ts": t, "value": v}))
                for s, t, v in readings]
    else:
        msgs = [(f"ews/440106/batch/GW-{b // per_message % 40:02d}",
                 orjson.dumps({"readings": [{"sensor": s.id, "ts": t, "value": v}
                                            for s, t, v in readings[b:b + per_message]]}))
                for b in range(0, n, per_message)]
    return msgs, lines


def make_session(port: int, client_id: str, v5: bool) -> None:
    """A persistent session subscribed to the stream, for the broker to queue it in."""
    _session(port, client_id, v5, keep=True)


def discard_session(port: int, client_id: str, v5: bool) -> None:
    """End a drained session: left in place it would queue every later run's stream too, and
    Mosquitto writes all it holds at every autosave, stalling for a second or two while later
    runs are timed."""
    _session(port, client_id, v5, keep=False)


def _session(port: int, client_id: str, v5: bool, keep: bool) -> None:
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, clean_session=None if v5 else not keep)
    # done once the broker has acknowledged what the session needs: its subscription, or the
    # connect that ended it
    done = threading.Event()
    if keep:
        c.on_connect = lambda client, *_: client.subscribe("ews/#", qos=1)
        c.on_subscribe = lambda *_: done.set()
    else:
        c.on_connect = lambda *_: done.set()
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if keep else 0
        c.connect("127.0.0.1", port, clean_start=not keep, properties=props)
    else:
        c.connect("127.0.0.1", port)
    c.loop_start()
    if not done.wait(10):
        raise RuntimeError(f"broker did not acknowledge {client_id}'s {'SUBSCRIBE' if keep else 'CONNECT'} within 10 s")
    c.disconnect()
    c.loop_stop()


def influx_count(url: str, db: str) -> int:
    r = httpx.get(f"{url}/query", params={"db": db, "q": "SELECT count(\"value\") FROM /.*/"}, timeout=60)
    total = 0
    for series in r.json()["results"][0].get("series", []):
        total += int(series["values"][0][1])
    return total


def raw_requests(lines: bytes, batch: int = 5000) -> list[bytes]:
    """The raw baseline's request bodies: `batch` lines each, in the stream's order."""
    rows = lines.splitlines(keepends=True)
    return [b"".join(rows[i:i + batch]) for i in range(0, len(rows), batch)]


def raw_influx_rate(url: str, lines: bytes, db: str, writers: int, batch: int = 5000) -> tuple[float, float]:
    """(points/s, CPU seconds this process spent sending them)."""
    httpx.post(f"{url}/query", data={"q": f'CREATE DATABASE "{db}"'})
    chunks = raw_requests(lines, batch)
    client = httpx.Client(base_url=url, timeout=60)

    def post(body: bytes) -> None:
        client.post("/write", params={"db": db, "precision": "ms"}, content=body).raise_for_status()

    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(post, chunks))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    client.close()
    return lines.count(b"\n") / elapsed, cpu


def run_role(role: str, port: int, client_id: str, messages: int, influx: str, db: str, state: Path,
             cpus: str = "") -> dict[str, Any]:
    argv = [sys.executable, "-P", str(ROLES_FILE), role, "--port", str(port), "--client-id", client_id,
            "--messages", str(messages), "--influx", influx, "--db", db, "--state", str(state)]
    if cpus and role in PIPELINES:
        argv += ["--cpus", cpus]
    out = subprocess.run(argv, capture_output=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in out.stdout.decode(errors="replace").splitlines():
        if line.startswith("BENCH "):
            return dict(orjson.loads(line[6:]))
    raise RuntimeError(f"{role} printed no result:\n{out.stderr.decode(errors='replace')[-3000:]}")


def publish_all(port: int, messages: list[tuple[str, bytes]], client_id: str, progress: Any) -> None:
    """Publish every (topic, payload) at QoS 1 with the load driver's lean publisher; return once
    the broker has acknowledged them all, so the whole stream sits in the sessions' queues."""
    pub = LeanPublisher("127.0.0.1", port, client_id)
    try:
        chunk = 5_000
        for i in range(0, len(messages), chunk):
            pub.publish_many([(t.encode(), p) for t, p in messages[i:i + chunk]])
            progress(pub.acked)
        if not pub.wait_acked(600):
            raise RuntimeError(f"broker acknowledged {pub.acked} of {pub.sent} messages")
        progress(pub.acked)
    finally:
        pub.close()


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def settle(pid: int, quiet_share: float = 0.05, most_s: float = 60.0) -> None:
    """Wait until a server process is idle: InfluxDB compacts what the previous subscriber wrote
    in the background, and that would be charged to the next one."""
    until = time.monotonic() + most_s
    last = cpu_of(pid)
    while time.monotonic() < until:
        time.sleep(0.5)
        now = cpu_of(pid)
        if now - last < quiet_share * 0.5:
            return
        last = now


def run_mode(per_message: int, n: int, roles: list[str], port: int, influx: str, state: Path,
             sensors: SensorRegistry, rep: int, influx_pid: int, cpus: str) -> list[dict[str, Any]]:
    msgs, lines = stream(sensors, n, per_message)
    tag = f"m{per_message}_r{rep}_{int(time.time())}"
    ids = {role: f"bench-{role}-{tag}" for role in roles}
    for role in roles:
        make_session(port, ids[role], v5=role == "gmqtt")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"publishing {len(msgs):,} messages ({n:,} readings) into the queues", total=len(msgs))
        publish_all(port, msgs, f"bench-pub-{tag}", progress=lambda k: progress.update(task, completed=k))
    results = []
    for role in roles:
        settle(influx_pid)
        console.print(f"  run {rep + 1}: {role} ({per_message}/message) draining its queue ...")
        db = f"bench_{role}_{tag}"
        c0 = cpu_of(influx_pid)
        r = run_role(role, port, ids[role], len(msgs), influx, db, state / ids[role], cpus)
        r["influx_cpu_s"] = cpu_of(influx_pid) - c0
        discard_session(port, ids[role], v5=role == "gmqtt")
        stores = role == "batching" or role in PIPELINES
        if stores:
            time.sleep(0.2)
            r["stored"] = influx_count(influx, db)
            r["lost"] = n - r["stored"]
        r["seconds"] = r["end"] - r["start"]
        r["msg_s"] = r["messages"] / r["seconds"]
        r["readings_s"] = r["readings"] / r["seconds"]
        r["mode"] = per_message
        r["rep"] = rep
        results.append(r)
    if per_message > 1:
        best: dict[str, Any] = {"readings_s": 0.0}
        for w in (1, 2):
            settle(influx_pid)
            c0 = cpu_of(influx_pid)
            rate, cpu = raw_influx_rate(influx, lines, f"bench_raw{w}_{tag}", w)
            if rate > best["readings_s"]:
                best = {"role": "InfluxDB raw", "readings_s": rate, "msg_s": 0.0, "readings": n, "messages": 0,
                        "cpu_s": cpu, "influx_cpu_s": cpu_of(influx_pid) - c0,
                        "rss_mb": 0.0, "mode": per_message, "rep": rep}
        results.append(best)
    return results


def start_split(may: set[int], db: InfluxServer, mq: ManagedServer) -> str:
    """Start InfluxDB on the first CPU of `may`; the broker, this process and so every subscriber
    it starts (and the raw baseline's client in it) on the rest. Each server starts under its
    mask, as systemd's `CPUAffinity=` or a container's cpuset would start it: Go sizes its
    scheduler (GOMAXPROCS) to the CPUs a process may use when it starts, so an InfluxDB pinned
    only after its start would keep one scheduler thread a machine CPU on its one CPU. Returns
    the placement, for the title."""
    first, *rest = sorted(may)
    os.sched_setaffinity(0, {first})  # this thread's mask alone, which the server forked from it inherits
    try:
        db.start()
    finally:
        os.sched_setaffinity(0, may)
    affinity.pin(rest)
    mq.start()
    others = ", ".join(map(str, rest))
    return f"InfluxDB on CPU {first}, broker, publisher and subscribers on CPU {others}"


RAW = "InfluxDB raw"
PIPELINES = ("pipeline", "ingest-only")


def plot(results: list[dict[str, Any]], out: Path, placement: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({r["mode"] for r in results})
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4))
    axes = [axes] if len(modes) == 1 else list(axes)
    for ax, mode in zip(axes, modes, strict=True):
        by = rates_by_role(results, mode)
        names = list(by)
        mid = [statistics.median(v) for v in by.values()]
        err = [[m - min(v) for m, v in zip(mid, by.values(), strict=True)],
               [max(v) - m for m, v in zip(mid, by.values(), strict=True)]]
        colors = ["#d62728" if n == "pipeline" else "#ff9896" if n == "ingest-only" else "#7f7f7f" for n in names]
        ax.bar(names, mid, yerr=err, capsize=3, color=colors)
        ax.set_title(f"{mode} reading{'s' if mode > 1 else ''} per message (median, range)")
        ax.set_ylabel("readings / s, end to end")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(placement, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def thread_lines(results: list[dict[str, Any]], modes: list[int]) -> list[str]:
    """Where the pipeline roles' CPU went, by thread: µs a reading, median over the runs."""
    out = []
    for mode in modes:
        for role in ("pipeline", "ingest-only"):
            rs = [r for r in results if r["mode"] == mode and r["role"] == role and "threads" in r]
            if not rs:
                continue
            us = {n: statistics.median(r["threads"].get(n, 0.0) / r["readings"] * 1e6 for r in rs)
                  for n in {n for r in rs for n in r["threads"]}}
            each = ", ".join(f"{n} {v:.2f}" for n, v in sorted(us.items(), key=lambda kv: -kv[1]) if v >= 0.005)
            out.append(f"{mode}/msg {role}, CPU µs a reading by thread (medians): {each}")
    return out


def rates_by_role(results: list[dict[str, Any]], mode: int, key: str = "readings_s") -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in results:
        if r["mode"] == mode:
            out.setdefault(r["role"], []).append(r[key])
    return out


def ratios(results: list[dict[str, Any]], mode: int) -> dict[str, list[float]]:
    """The targets' ratios, one per run (each against the baselines of the same run)."""
    out: dict[str, list[float]] = {}
    for rep in sorted({r["rep"] for r in results if r["mode"] == mode}):
        by = {r["role"]: r for r in results if r["mode"] == mode and r["rep"] == rep}
        p = by["pipeline"]
        if mode == 1:
            out.setdefault("of bare", []).append(p["msg_s"] / by["bare"]["msg_s"])
            out.setdefault("x batching", []).append(p["msg_s"] / by["batching"]["msg_s"])
        elif RAW in by:
            out.setdefault("of raw", []).append(p["readings_s"] / by[RAW]["readings_s"])
            out.setdefault("ingest-only of raw", []).append(by["ingest-only"]["readings_s"] / by[RAW]["readings_s"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000, help="readings in the stream")
    ap.add_argument("--modes", default="1,100", help="readings per message, comma separated")
    ap.add_argument("--runs", type=int, default=3, help="runs per mode (each with its own baselines)")
    ap.add_argument("--gmqtt", action="store_true", help="also run gmqtt as a bare subscriber (pip install gmqtt)")
    ap.add_argument("--out", type=Path, default=Path(".state/bench/ingest.png"))
    place = ap.add_mutually_exclusive_group()
    place.add_argument("--pin", action="store_true", help="run the pipeline roles pinned to one CPU (`cpus`)")
    place.add_argument("--split", action="store_true",
                       help="InfluxDB pinned to one CPU, everything else (broker, subscribers, clients) to the others")
    a = ap.parse_args()
    if a.gmqtt and importlib.util.find_spec("gmqtt") is None:
        console.print("[yellow]gmqtt is not installed (pip install gmqtt); running without it[/]")
        a.gmqtt = False
    roles = ["bare", "bare-tuned", *(["gmqtt"] if a.gmqtt else []), "batching", "pipeline", "ingest-only"]
    may = affinity.allowed()
    cpus = str(max(may)) if a.pin else ""
    if a.split and len(may) < 2:
        ap.error(f"--split needs two CPUs or more; this process may run on {sorted(may)}")
    sensors = RegistryConfig.sample().load().sensors
    state = Path(tempfile.mkdtemp(prefix="ews-bench-ingest-"))
    mq, db = mosquitto(state), influxdb(state)
    load = os.getloadavg()
    results: list[dict[str, Any]] = []
    modes = [int(m) for m in a.modes.split(",")]
    placement = ""
    try:
        if a.split:
            placement = start_split(may, db, mq)
        else:
            mq.start()
            db.start()
        assert db.proc is not None and mq.proc is not None
        for mode in modes:
            for rep in range(a.runs):
                results += run_mode(mode, a.messages, roles, mq.port, db.url, state, sensors, rep, db.proc.pid,
                                    cpus)
    finally:
        mq.stop()
        db.stop()
        shutil.rmtree(state, ignore_errors=True)
    placement = placement or (f"pipeline pinned to CPU {cpus}" if cpus else "pipeline unpinned")
    t = Table(title=f"ingest, {a.messages:,} QoS 1 readings, {a.runs} runs, {placement} "
                    f"(load average before: {load[0]:.1f} {load[1]:.1f})")
    for col in ("mode", "subscriber", "msg/s median", "readings/s median", "readings/s range", "lost (all runs)",
                "CPU µs/reading", "InfluxDB CPU µs/reading", "peak RSS MB"):
        t.add_column(col, justify="right")
    for mode in modes:
        msg_s = rates_by_role(results, mode, "msg_s")
        for role, rates in rates_by_role(results, mode).items():
            rs = [r for r in results if r["mode"] == mode and r["role"] == role]
            lost = str(sum(r["lost"] for r in rs)) if "lost" in rs[0] else "-"
            spooled = sum(r.get("spooled", 0) for r in rs)
            if spooled:  # stored through the disk spool: that run measured the spool's path
                lost += f" ({spooled:,} via the spool)"
            cpu = statistics.median(r["cpu_s"] / r["readings"] * 1e6 for r in rs)
            stores = role in ("batching", "pipeline", "ingest-only", RAW)
            influx_cpu = statistics.median(r["influx_cpu_s"] / r["readings"] * 1e6 for r in rs)
            sub = role != RAW
            t.add_row(f"{mode}/msg", role, f"{statistics.median(msg_s[role]):,.0f}" if sub else "",
                      f"{statistics.median(rates):,.0f}", f"{min(rates):,.0f} - {max(rates):,.0f}", lost,
                      f"{cpu:.2f}", f"{influx_cpu:.2f}" if stores else "",
                      f"{max(r['rss_mb'] for r in rs):.0f}" if sub else "")
    console.print(t)
    for line in thread_lines(results, modes):
        console.print(line, soft_wrap=True)

    def show(v: list[float], pct: bool) -> str:
        each = ", ".join(f"{x:.0%}" if pct else f"{x:.2f}x" for x in v)
        med = statistics.median(v)
        return f"median {med:.0%} ({each})" if pct else f"median {med:.2f}x ({each})"

    for mode in modes:
        per_run = ratios(results, mode)
        pipeline_lost = sum(r.get("lost", 0) for r in results if r["mode"] == mode and r["role"] == "pipeline")
        if mode == 1:
            console.print(f"1/msg: pipeline {show(per_run['of bare'], True)} of the bare paho subscriber "
                          f"(target >= 90%), {show(per_run['x batching'], False)} the batching script "
                          f"(target >= 1.8x), lost {pipeline_lost}")
        elif per_run:
            console.print(f"{mode}/msg: pipeline {show(per_run['of raw'], True)} of InfluxDB's raw batched rate "
                          f"(target >= 80%), lost {pipeline_lost}; ingest alone (rules off) "
                          f"{show(per_run['ingest-only of raw'], True)}")
    console.print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    plot(results, a.out, placement)
    console.print(f"plot: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
