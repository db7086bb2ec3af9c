"""`ews loadtest`: N sensors at R readings/s for T seconds against the pipeline, and what came
out the other end.

The pipeline under test is started here as a subprocess (`ews run` on a generated district of
N sensors, a fresh InfluxDB database and a fresh MQTT session) or attached to by pid (then the
configuration's own registry supplies the sensors). Publisher processes (loadfleet.py) send
the load at QoS 1; latency probes ride along (loadwatch.py). A step reports:

- achieved rate: readings the broker acknowledged per second of publishing;
- readings lost: acknowledged minus stored, counted back from InfluxDB once the pipeline has
  drained (or the drain time ran out);
- latency p50/p95/p99: from a probe's publish to its warning on the warnings topic;
- pipeline RSS, sampled every half second.

The stepped mode raises the rate (doubling, or by `--step`) until a step loses readings, its
p99 latency passes the limit, or the publishers cannot reach the rate, bisects once between
the last good and the first bad rate, and reports the highest rate that held.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ews.config import Config, load_config, secret
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from simulators.loadfleet import DISTRICT, Broker, Fleet, LoadSensors, generate_district, registry_load
from simulators.loadwatch import Latencies, Prober, Rss, StoredCounter, Watcher

PROBES = 40
PROBES_PER_S = 10.0
PER_PROCESS_RATE = 15_000.0  # what one lean publisher process sends comfortably here


@dataclass
class Step:
    rate: float
    seconds: float
    started: float = 0.0  # wall clock
    published_s: float = 0.0  # from the start until every publisher had its acknowledgements
    acked: int = 0  # load readings the broker acknowledged
    probes: int = 0  # probe readings acknowledged
    stored: int = 0
    lost: int = 0
    drain_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # in send order
    latency_t: list[float] = field(default_factory=list)  # when each probe was sent, s since the test began
    probes_sent: int = 0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (s since the test began, MB)
    series: list[tuple[float, int, int]] = field(default_factory=list)  # (s, acked, stored) cumulative
    verdict: str = ""

    @property
    def achieved(self) -> float:
        """Acknowledged readings per second of the publishing window (publishers stop at its
        end, so a publisher that cannot keep up shows here)."""
        return self.acked / self.seconds if self.published_s else 0.0

    def p(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    def summary(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("series")
        d.pop("rss_mb")
        d.pop("latencies_ms")
        d.pop("latency_t")
        rss = [mb for _, mb in self.rss_mb if mb == mb]
        d.update(achieved_rate=round(self.achieved, 1), p50_ms=self.p(50), p95_ms=self.p(95), p99_ms=self.p(99),
                 latency_samples=len(self.latencies_ms), rss_max_mb=max(rss, default=None),
                 rss_end_mb=rss[-1] if rss else None)
        return d


class LoadTest:
    def __init__(self, cfg: Config, args: argparse.Namespace, console: Console):
        self.cfg = cfg
        self.args = args
        self.console = console
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        self.proc: subprocess.Popen[bytes] | None = None
        self.broker = Broker.of(cfg.mqtt)
        if args.pid:
            regions = RegionRegistry.load(cfg.registries.regions)
            registry = SensorRegistry.load(cfg.registries.sensors, regions)
            self.load = registry_load(registry, args.sensors, PROBES)
            self.database = cfg.influxdb.database
            self.pid = int(args.pid)
            kinds = sorted(registry.kinds)
            self.warnings_prefix = cfg.mqtt.warnings_prefix
        else:
            self.warnings_prefix = "ews-loadtest-out/warnings"
            console.print(f"[yellow]load of a generated district {DISTRICT} on {cfg.mqtt.host}:{cfg.mqtt.port} and "
                          f"{cfg.influxdb.url}: use servers that are not in service[/]")
            self.load, self.database = self._start_pipeline()
            assert self.proc is not None
            self.pid = self.proc.pid
            kinds = ["gas", "ponding", "rain", "smoke", "water_level"]
        top = max(args.rate, args.max_rate if args.stepped else args.rate)
        n_proc = args.processes or max(1, min(os.cpu_count() or 1, math.ceil(top / PER_PROCESS_RATE)))
        self.fleet = Fleet(self.broker, self.load, min(n_proc, max(1, len(self.load))))
        self.fleet.start()
        self.latencies = Latencies()
        self.watcher = Watcher(self.broker, self.warnings_prefix, self.latencies)
        self.prober = Prober(self.broker, self.load, self.latencies, PROBES_PER_S)
        self.prober.start()
        self.counter = StoredCounter(cfg.influxdb.url, self.database, cfg.influxdb.username,
                                     secret(cfg.influxdb.password_env), kinds, self.load.sensor_filter)
        self.rss = Rss(self.pid)
        if not self.watcher.connected.wait(10):
            raise ConnectionError("the warnings watcher could not subscribe within 10 s")

    def _start_pipeline(self) -> tuple[LoadSensors, str]:
        a = self.args
        stamp = time.strftime("%Y%m%d%H%M%S")
        regions, sensors, load = generate_district(a.sensors, PROBES, self.out / "district")
        database = f"ews_loadtest_{stamp}_{os.getpid()}"
        doc = self.cfg.model_dump(mode="json", exclude_none=True)
        # only the broker and database are taken over: its own session, subscriptions, warnings
        # topic, state and spool, no HTTP API, deliveries to the console
        doc.pop("api", None)
        doc["ingest"].pop("spool_dir", None)
        doc["mqtt"].update(client_id=f"ews-loadtest-pipeline-{stamp}-{os.getpid()}",
                           subscriptions=[f"ews/{DISTRICT}/#"], warnings_prefix=self.warnings_prefix)
        doc["influxdb"]["database"] = database
        doc["registries"] = {"regions": str(regions), "sensors": str(sensors)}
        doc["state_dir"] = str(self.out / f"pipeline-state-{stamp}")
        doc["notifiers"] = {"channels": [{"name": "console", "type": "console"}]}
        cfg_path = self.out / "pipeline.yaml"
        cfg_path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
        log_path = self.out / "pipeline.log"
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ews.cli", "run", "--config", str(cfg_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the pipeline exited with {self.proc.returncode}; see {log_path}")
            if b"MQTT subscribed" in log_path.read_bytes():
                return load, database
            time.sleep(0.2)
        raise TimeoutError(f"the pipeline did not connect and subscribe to the broker within 120 s; see {log_path}")

    # --- one step -------------------------------------------------------------------------

    def step(self, rate: float, seconds: float, live: Live, steps: list[Step]) -> Step:
        st = Step(rate, seconds)
        base_acked = self.fleet.totals()[1]
        base_probes = self.prober.acked
        start_at = time.time() + 0.5
        st.started = start_at
        from_ms = int(start_at * 1000) - 1
        self.fleet.begin(rate, seconds, start_at)
        while time.time() < start_at:
            time.sleep(0.01)
        self.prober.active.set()
        last_poll = 0.0
        stored = 0
        publishing = True
        done_at = 0.0
        drain_limit = max(30.0, 2 * seconds)
        while True:
            now = time.time()
            if publishing and (now - start_at >= seconds):
                if not self.fleet.wait_done(timeout_s=120):
                    st.verdict = "publishers failed"
                    break
                self.prober.settle()
                st.published_s = max(1e-9, time.time() - start_at)
                publishing = False
                done_at = time.time()
            acked = self.fleet.totals()[1] - base_acked
            probes = self.prober.acked - base_probes
            if now - last_poll >= 1.0:
                last_poll = now
                counted = self.counter.count(from_ms, int(now * 1000) + 1000)
                stored = counted if counted >= 0 else stored
                st.rss_mb.append((now - self.t0, self.rss.mb()))
            st.series.append((now - self.t0, acked, stored))
            st.acked, st.probes, st.stored = acked, probes, stored
            answered = sorted(self.latencies.since(start_at))
            st.latencies_ms = [lat * 1000 for _, lat in answered]
            st.latency_t = [at - self.t0 for at, _ in answered]
            live.update(self.render([*steps, st], publishing))
            if not publishing:
                drained = stored >= acked + probes
                all_answered = self.latencies.waiting(start_at) == 0
                waited = time.time() - done_at
                if (drained and (all_answered or waited > 10)) or waited > drain_limit:
                    st.drain_s = waited
                    break
                if self.proc is not None and self.proc.poll() is not None:
                    st.verdict = f"pipeline exited with {self.proc.returncode}"
                    break
            time.sleep(0.25)
        st.stored = max(0, self.counter.count(from_ms, int(time.time() * 1000) + 1000))
        st.lost = max(0, st.acked + st.probes - st.stored)
        st.probes_sent = len(st.latencies_ms) + self.latencies.waiting(start_at)
        return st

    # --- display ----------------------------------------------------------------------------

    def render(self, steps: list[Step], publishing: bool) -> Group:
        t = Table(title=f"ews loadtest: {len(self.load):,} sensors, {self.fleet.processes} publisher "
                        f"process(es), pipeline pid {self.pid}", title_justify="left")
        for col in ("step", "target/s", "achieved/s", "published", "stored", "lost/lag", "p50 ms", "p95 ms",
                    "p99 ms", "RSS MB", "verdict"):
            t.add_column(col, justify="right")
        for k, s in enumerate(steps, 1):
            rss = [mb for _, mb in s.rss_mb if mb == mb]
            lag = s.acked + s.probes - s.stored
            t.add_row(
                str(k), f"{s.rate:,.0f}", f"{s.achieved:,.0f}" if s.published_s else "…",
                f"{s.acked + s.probes:,}", f"{s.stored:,}", f"{lag:,}", _ms(s.p(50)), _ms(s.p(95)), _ms(s.p(99)),
                f"{rss[-1]:,.0f}" if rss else "-", s.verdict or ("publishing" if publishing and k == len(steps)
                                                                  else "draining" if k == len(steps) else ""),
            )
        return Group(t)

    def close(self) -> None:
        for stop in (self.prober.stop, self.watcher.stop, self.fleet.stop, self.counter.close):
            with contextlib.suppress(Exception):  # one part failing must not keep the others running
                stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def judge(st: Step, max_p99_ms: float, need_rate: bool = True) -> str:
    """Why a step failed, or "ok". `need_rate`: a step whose publishers fell short of the rate
    proves nothing about the pipeline at that rate (stepped mode)."""
    if st.verdict:
        return st.verdict
    if st.lost:
        return f"lost {st.lost:,}"
    if not st.latencies_ms:
        return "no latency sample"
    p99 = st.p(99) or 0.0
    if p99 > max_p99_ms:
        return f"p99 {p99:,.0f} ms > {max_p99_ms:,.0f}"
    if need_rate and st.achieved < 0.95 * st.rate:
        return f"publishers reached {st.achieved:,.0f}/s only"
    return "ok"


def run_loadtest(args: argparse.Namespace) -> int:
    console = Console()
    cfg = load_config(args.config)
    test = LoadTest(cfg, args, console)
    steps: list[Step] = []
    try:
        with Live(test.render([], True), console=console, refresh_per_second=4) as live:
            if not args.stepped:
                st = test.step(args.rate, args.duration, live, steps)
                st.verdict = judge(st, math.inf, need_rate=False)
                steps.append(st)
            else:
                _stepped(test, args, live, steps)
            live.update(test.render(steps, False))
    finally:
        test.close()
    report = _report(console, args, steps, test)
    (args.out / "loadtest.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    from simulators.loadplots import plot

    pngs = plot(steps, args.out, f"{len(test.load):,} sensors")
    console.print(f"summary: {args.out / 'loadtest.json'}; plots: {', '.join(str(p) for p in pngs)}")
    if args.stepped:
        return 0 if report["sustainable_rate"] else 1
    return 0 if steps and steps[0].verdict == "ok" else 1


def _stepped(test: LoadTest, args: argparse.Namespace, live: Live, steps: list[Step]) -> None:
    rate = args.rate
    good: float | None = None
    bad: float | None = None
    while rate <= args.max_rate:
        st = test.step(rate, args.duration, live, steps)
        st.verdict = judge(st, args.max_p99_ms)
        steps.append(st)
        if st.verdict != "ok":
            bad = rate
            break
        good = rate
        rate = rate + args.step if args.step > 0 else rate * 2
    if good is not None and bad is not None and args.step <= 0 and bad - good > 0.1 * good:
        mid = round((good + bad) / 2, -2) or (good + bad) / 2
        st = test.step(mid, args.duration, live, steps)
        st.verdict = judge(st, args.max_p99_ms)
        steps.append(st)


def _report(console: Console, args: argparse.Namespace, steps: list[Step], test: LoadTest) -> dict[str, object]:
    t = Table(title="load test summary", title_justify="left")
    for col in ("target/s", "achieved/s", "published", "stored", "lost", "p50 ms", "p95 ms", "p99 ms",
                "probes", "RSS max MB", "verdict"):
        t.add_column(col, justify="right")
    for s in steps:
        d = s.summary()
        t.add_row(f"{s.rate:,.0f}", f"{s.achieved:,.0f}", f"{s.acked + s.probes:,}", f"{s.stored:,}", f"{s.lost:,}",
                  _ms(s.p(50)), _ms(s.p(95)), _ms(s.p(99)), str(len(s.latencies_ms)),
                  f"{d['rss_max_mb']:,.0f}" if d["rss_max_mb"] is not None else "-", s.verdict)
    console.print(t)
    ok = [s for s in steps if s.verdict == "ok"]
    best = max(ok, key=lambda s: s.rate) if ok else None
    if args.stepped:
        if best is None:
            console.print("[red]no step held: not even the first rate is sustainable[/]")
        else:
            console.print(f"highest sustainable rate: [bold]{best.achieved:,.0f} readings/s[/] "
                          f"(p99 {_ms(best.p(99))} ms, nothing lost)")
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "sensors": len(test.load), "processes": test.fleet.processes, "pipeline_pid": test.pid,
        "started_pipeline": test.proc is not None, "machine_load": load, "cpus": os.cpu_count(),
        "max_p99_ms": args.max_p99_ms if args.stepped else None,
        "sustainable_rate": round(best.achieved, 1) if best is not None and args.stepped else None,
        "steps": [s.summary() for s in steps],
    }
