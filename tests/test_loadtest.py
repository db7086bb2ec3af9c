"""The load driver: a short run at a modest rate, and the stepped search for the highest
sustainable rate (its logic here; the full run is bench/loadtest.py)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ews.config import sample_dir
from ews.servers import LocalServers
from simulators import loadtest
from simulators.loadtest import Step, judge

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_loadtest_at_a_modest_rate_loses_nothing_and_measures_latency(servers: LocalServers, tmp_path: Path) -> None:
    cfg = tmp_path / "base.yaml"
    cfg.write_text(
        f"mqtt: {{host: 127.0.0.1, port: {servers.mqtt.port}}}\n"
        f"influxdb: {{url: '{servers.influx_url}', database: unused}}\n"
        f"registries: {{regions: '{sample_dir() / 'regions.yaml'}', sensors: '{sample_dir() / 'sensors.yaml'}'}}\n"
        "rules_profile: guangdong\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ews.cli", "loadtest", "--config", str(cfg), "--sensors", "200", "--rate", "300",
         "--duration", "3", "--out", str(out)],
        cwd=REPO, env=dict(os.environ, COLUMNS="160"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its pipeline and publishers are in its group, to end them all on a hang
    )
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    report = json.loads((out / "loadtest.json").read_text(encoding="utf-8"))
    (step,) = report["steps"]
    assert step["acked"] > 0 and step["probes"] > 0
    assert step["lost"] == 0 and step["stored"] == step["acked"] + step["probes"]  # counted back in InfluxDB
    assert step["latency_samples"] > 0 and step["p50_ms"] > 0 and step["p99_ms"] >= step["p50_ms"]
    assert step["rss_max_mb"] > 10  # the pipeline process was watched
    assert "load test summary" in stdout and "p99" in stdout
    for png in ("loadtest_rate.png", "loadtest_latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the pipeline it started has stopped
    assert "stopping" in (out / "pipeline.log").read_text(encoding="utf-8")


class FakeTest:
    """Stands in for a LoadTest: the 'pipeline' keeps up to `limit` readings/s."""

    def __init__(self, limit: float):
        self.limit = limit
        self.rates: list[float] = []

    def step(self, rate: float, seconds: float, live: Any, steps: list[Step]) -> Step:
        self.rates.append(rate)
        s = Step(rate, seconds, published_s=seconds, acked=int(rate * seconds), probes=10)
        s.stored = s.acked + s.probes
        s.latencies_ms = [20.0] * 50 if rate <= self.limit else [20.0] * 40 + [5000.0] * 10
        return s


def test_stepped_search_doubles_then_bisects() -> None:
    fake = FakeTest(limit=7000)
    args = argparse.Namespace(rate=1000.0, step=0.0, max_rate=100_000.0, duration=5.0, max_p99_ms=1000.0)
    steps: list[Step] = []
    loadtest._stepped(fake, args, None, steps)  # type: ignore[arg-type]
    assert fake.rates == [1000.0, 2000.0, 4000.0, 8000.0, 6000.0]
    assert [s.verdict for s in steps] == ["ok", "ok", "ok", "p99 5,000 ms > 1,000", "ok"]
    best = max((s for s in steps if s.verdict == "ok"), key=lambda s: s.rate)
    assert best.rate == 6000.0


def test_judge_names_what_broke() -> None:
    s = Step(1000.0, 10.0, published_s=10.0, acked=10_000, probes=5, stored=9_990, latencies_ms=[10.0])
    s.lost = 15
    assert judge(s, 500.0) == "lost 15"
    s.lost = 0
    assert judge(s, 500.0) == "ok"
    s.acked = 8000
    assert judge(s, 500.0).startswith("publishers reached 800/s")
    assert judge(s, 500.0, need_rate=False) == "ok"
    s.latencies_ms = []
    assert judge(s, 500.0) == "no latency sample"
