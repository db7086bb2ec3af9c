"""`cpus`: the pipeline pinned to chosen CPUs, every thread of it, and a CPU the host does not
offer named in the config error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ews.config import load_config, sample_dir
from ews.servers import LocalServers
from ews.yamlfile import ConfigError

from .httpstub import Hook
from .pipelineproc import PipelineRun
from .test_restart import config_doc, hook  # noqa: F401  (hook is a fixture)
from .waiting import wait_for

ALLOWED = sorted(os.sched_getaffinity(0))
needs_two = pytest.mark.skipif(len(ALLOWED) < 2, reason="pinning is only visible with two CPUs or more to choose from")


def cpu_list(text: str) -> frozenset[int]:
    """The kernel's CPU list notation: "0-2,5" is {0, 1, 2, 5}."""
    out: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return frozenset(out)


def masks(pid: int) -> dict[str, frozenset[int]]:
    """Each thread's name and the CPUs it may run on, as the kernel reports them."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
        out[f"{status['Name'].strip()}/{task.name}"] = cpu_list(status["Cpus_allowed_list"].strip())
    return out


def write_config(tmp_path: Path, cpus: str) -> Path:
    cfg = tmp_path / "ews.yaml"
    cfg.write_text(f"registries:\n  regions: {sample_dir() / 'regions.yaml'}\n"
                   f"  sensors: {sample_dir() / 'sensors.yaml'}\n{cpus}", encoding="utf-8")
    return cfg


def test_a_cpu_the_host_does_not_offer_is_named_with_its_line(tmp_path: Path) -> None:
    missing = max(ALLOWED) + 1000
    cfg = write_config(tmp_path, f"cpus:\n  - {ALLOWED[0]}\n  - {missing}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    [problem] = err.value.problems
    assert (problem.file, problem.line, problem.field) == (str(cfg), 4, "cpus")
    assert f"CPU {missing} is not one this process may run on" in problem.reason
    assert ", ".join(map(str, ALLOWED)) in problem.reason

    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "cpus: []\n"))
    assert [p.field for p in err.value.problems] == ["cpus"]

    assert load_config(write_config(tmp_path, f"cpus: [{ALLOWED[-1]}]\n")).cpus == [ALLOWED[-1]]
    assert load_config(write_config(tmp_path, "")).cpus is None


@needs_two
def test_threads_running_before_and_started_after_are_pinned() -> None:
    cpu = ALLOWED[-1]
    code = textwrap.dedent(f"""
        import os, threading
        from ews import affinity
        go = threading.Event()
        early = threading.Thread(target=go.wait); early.start()
        affinity.pin([{cpu}])
        late = threading.Thread(target=go.wait); late.start()
        print(sorted(os.sched_getaffinity(early.native_id)), sorted(os.sched_getaffinity(late.native_id)),
              sorted(os.sched_getaffinity(0)))
        go.set()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == [f"[{cpu}]"] * 3


@pytest.mark.integration
@needs_two
def test_a_pinned_pipeline_runs_every_thread_on_its_cpu(servers: LocalServers, influx_db: str, hook: Hook,  # noqa: F811
                                                         tmp_path: Path) -> None:
    cpu = ALLOWED[-1]
    doc = {**config_doc(servers, influx_db, tmp_path / "state", hook, "pinned"), "cpus": [cpu]}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    run = PipelineRun(cfg, tmp_path / "pipeline.log")
    try:
        # the network thread, the decode, write and rules threads, the outbox's workers ...; some
        # start after the broker's SUBACK that PipelineRun waits for, so they are waited for too
        assert wait_for(lambda: len(masks(run.proc.pid)) >= 5, 30), masks(run.proc.pid)
        threads = masks(run.proc.pid)
        assert set(threads.values()) == {frozenset({cpu})}, threads
        assert f"pinned to CPU {cpu}" in (tmp_path / "pipeline.log").read_text(encoding="utf-8")
    finally:
        run.stop()

    # by default the scheduler keeps every CPU the process was given
    doc = config_doc(servers, influx_db, tmp_path / "state2", hook, "unpinned")
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    run = PipelineRun(cfg, tmp_path / "pipeline2.log")
    try:
        assert set(masks(run.proc.pid).values()) == {frozenset(ALLOWED)}
    finally:
        run.stop()
