"""The `ews` command as users run it: rules check, configuration errors, and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ews.cli import main
from ews.config import load_config
from ews.servers import LocalServers
from ews.yamlfile import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_rules_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(REPO / "rules" / "defaults")]) == 0
    assert "OK" in capsys.readouterr().out


def test_rules_check_reports_file_line_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n"
        "  - id: ponding\n"
        "    select: {kind: ponding}\n"
        "    measure: {type: value}\n"
        "    levels:\n"
        "      yellow: 15\n"
        "      purple: 30\n"  # line 7: no such level
    )
    assert main(["rules", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:7:" in err and "purple" in err


def test_rules_check_binds_against_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "river.yaml"
    f.write_text(
        "rules:\n"
        "  - id: river_flood_peak\n"
        "    select: {kind: water_level}\n"
        "    measure: {type: value}\n"
        "    levels:\n"
        "      red: $flood_of_record\n"  # no sensor has this parameter
    )
    sample = REPO / "ews" / "sample"
    code = main(["rules", "check", str(f), "--sensors", str(sample / "sensors.yaml"),
                 "--regions", str(sample / "regions.yaml")])
    err = capsys.readouterr().err
    assert code == 1 and "flood_of_record" in err


def test_config_error_names_file_field_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "mqtt:\n"
        "  host: 127.0.0.1\n"
        "  port: seventy\n"
        "registries:\n"
        "  regions: r.yaml\n"
        "  sensors: s.yaml\n"
        "notifiers:\n"
        "  channels:\n"
        "    - {name: x, type: carrier-pigeon}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    text = str(info.value)
    assert f"{cfg}:3: mqtt.port:" in text
    assert f"{cfg}:9: notifiers.channels[0].type:" in text


def test_run_with_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("registries: {regions: r.yaml}\n")
    assert main(["run", "--config", str(cfg)]) == 2
    assert "registries.sensors" in capsys.readouterr().err


SAMPLE_CONFIG = str(REPO / "ews" / "sample" / "config.yaml")


@pytest.mark.parametrize(("argv", "option"), [
    (["simulate", "rainstorm", "--speed", "0"], "--speed"),
    (["simulate", "rainstorm", "--speed", "nan"], "--speed"),
    (["simulate", "rainstorm", "--seed", "-1"], "--seed"),  # numpy refused it, deep in the models
    (["simulate", "rainstorm", "--hours", "inf"], "--hours"),  # an OverflowError traceback
    (["simulate", "rainstorm", "--hours", "x"], "--hours"),
    (["replay", "x.csv", "--speed", "-1"], "--speed"),
    (["loadtest", "--sensors", "0"], "--sensors"),
    (["loadtest", "--rate", "-5"], "--rate"),
    (["loadtest", "--duration", "0"], "--duration"),
    (["backtest", "--min-accuracy", "1.5"], "--min-accuracy"),
    (["backtest", "--max-lead", "soon"], "--max-lead"),
    (["run", "--metrics-port", "70000"], "--metrics-port"),
    (["demo", "--seed", "1.5"], "--seed"),
    (["silence", "add", "--start", "yesterday"], "--start"),  # was the bare "Invalid isoformat string"
    (["cap-feed", "--db", "x.db", "--listen", "127.0.0.1:99999"], "--listen"),  # was an OverflowError
])
def test_values_no_command_can_use_are_refused_by_their_option(
        argv: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--config", SAMPLE_CONFIG])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err and "Traceback" not in err, err


@pytest.mark.parametrize("hours", ["0.01", "1e9"])  # no tick at all; 89 GiB of ticks
def test_simulate_hours_outside_a_scenario_s_bounds_are_refused(hours: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "rainstorm", "--dry-run", "--config", SAMPLE_CONFIG, "--hours", hours]) == 2
    assert "--hours" in capsys.readouterr().err


def test_run_with_its_metrics_port_taken_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Two shards on one host with the same --metrics-port: the second says why it cannot start."""
    import socket

    from ews.config import sample_dir

    cfg = tmp_path / "config.yaml"
    sample = sample_dir()
    cfg.write_text(f"registries: {{regions: {sample / 'regions.yaml'}, sensors: {sample / 'sensors.yaml'}}}\n"
                   f"state_dir: {tmp_path / 'state'}\n")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["run", "--config", str(cfg), "--metrics-port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err and "own --metrics-port" in err
    assert "Traceback" not in err
    assert not (tmp_path / "state").exists()  # it stopped before the pipeline opened anything


_POOLS = ("import os, ews.cli, numpy, scipy.spatial; "
          "print(os.environ.get('OPENBLAS_NUM_THREADS', 'unset'), len(os.listdir('/proc/self/task')))")


@pytest.mark.parametrize(("setting", "expected"), [(None, "1"), ("3", "3")])
def test_the_command_starts_no_blas_thread_pools_unless_told_to(setting: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if setting is not None:
        env["OPENBLAS_NUM_THREADS"] = setting
    out = subprocess.run([sys.executable, "-P", "-c", _POOLS], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out[0] == expected  # the operator's own setting wins
    if setting is None:
        assert out[1] == "1", f"numpy or scipy started BLAS threads: {out[1]} threads in all"


def test_demo_without_deploy_templates_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """An `ews` installed from the wheel has no deploy/ folder to start its local servers from."""
    import ews.servers

    monkeypatch.setattr(ews.servers, "DEPLOY_DIR", tmp_path / "site-packages" / "deploy")
    assert main(["demo", "--state-dir", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err
    assert "ews demo: server configuration template" in err
    assert str(tmp_path / "site-packages" / "deploy" / "mosquitto" / "mosquitto.conf") in err
    assert "./run demo" in err and "Traceback" not in err


def test_demo_runs_end_to_end(servers: LocalServers, tmp_path: Path) -> None:
    """The README's first command, fast: every reading stored, warnings issued, webhooks signed."""
    env = dict(os.environ, COLUMNS="160")
    proc = subprocess.run(
        [sys.executable, "-m", "ews.cli", "demo", "--speed", "7200", "--state-dir", str(tmp_path / "demo")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "published ✓" in out, out[-3000:]
    assert "0 bad signatures" in out and "0 duplicates" in out
    assert "红色" in out
