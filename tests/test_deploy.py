"""The shipped deployment files agree with the configuration model and the sharding rules."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from ews.cli import build_parser
from ews.config import Config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _docs(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_k8s_shards_are_disjoint_single_consumers() -> None:
    configs: dict[str, Config] = {}
    replicas: dict[str, int] = {}
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in _docs(f):
            if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}):
                configs[d["metadata"]["name"]] = Config.model_validate(yaml.safe_load(d["data"]["config.yaml"]))
            if d["kind"] == "StatefulSet" and d["metadata"]["name"].startswith("ews-"):
                replicas[d["metadata"]["name"]] = d["spec"]["replicas"]
    assert len(configs) >= 2 and set(configs) == set(replicas)
    assert all(n == 1 for n in replicas.values())
    client_ids = [c.mqtt.client_id for c in configs.values()]
    assert len(set(client_ids)) == len(client_ids)
    filters = [f for c in configs.values() for f in c.mqtt.subscriptions]
    assert len(set(filters)) == len(filters), "a region subtree is in two shards"
    streets = {f.split("/")[2] for f in filters}
    sample_streets = {f"440106{n:03d}" for n in range(1, 22)}
    assert streets == sample_streets, "every street of the sample district is in exactly one shard"
    for f in filters:
        assert f.startswith("ews/440106/") and f.endswith("/#")


def test_compose_and_systemd_files() -> None:
    Config.model_validate(yaml.safe_load((DEPLOY / "compose" / "ews.yaml").read_text()))
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    assert {"mosquitto", "influxdb", "prometheus", "alertmanager", "ews"} <= set(compose["services"])
    unit = (DEPLOY / "systemd" / "ews-pipeline@.service").read_text()
    assert "ExecStart=/opt/ews/.venv/bin/ews run --config /etc/ews/%i.yaml" in unit
    # the metrics port's default comes before the shard's own file, which may override it
    # (shards sharing a host)
    assert unit.index("Environment=EWS_METRICS_PORT=9108") < unit.index("EnvironmentFile=-/etc/ews/%i.env")
    conf = (DEPLOY / "compose" / "mosquitto.conf").read_text()
    assert "max_queued_messages 0" in conf and "persistence true" in conf


def test_compiled_code_is_cached_where_the_service_may_write() -> None:
    """The gateway scanner is compiled at the first start and cached; where the install is
    read-only (systemd's ProtectSystem=strict, the image's non-root user) an unset cache folder
    would mean compiling again at every start."""
    unit = (DEPLOY / "systemd" / "ews-pipeline@.service").read_text()
    cache = re.search(r"^Environment=NUMBA_CACHE_DIR=(\S+)$", unit, re.M)
    writable = re.search(r"^ReadWritePaths=(\S+)$", unit, re.M)
    assert cache and writable and cache[1].startswith(writable[1] + "/")
    image = (DEPLOY / "compose" / "Dockerfile").read_text()
    env = re.search(r"^ENV NUMBA_CACHE_DIR=(\S+)$", image, re.M)
    assert env and env[1].startswith("/var/lib/ews/") and "chown ews:ews /var/lib/ews" in image


def _shipped_command_lines() -> dict[str, list[str]]:
    """Every `ews` command line the deployment files start, as argv after `ews`."""
    lines: dict[str, list[str]] = {}
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in _docs(f):
            if d["kind"] == "StatefulSet":
                for c in d["spec"]["template"]["spec"]["containers"]:
                    if "args" in c:
                        lines[f"{f.name}:{c['name']}"] = [str(a) for a in c["args"]]
    unit = (DEPLOY / "systemd" / "ews-pipeline@.service").read_text()
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    # systemd expands ${VAR} from Environment= (the defaults; a shard's env file may override)
    env = dict(ln.removeprefix("Environment=").split("=", 1) for ln in unit.splitlines()
               if ln.startswith("Environment="))
    for name, value in env.items():
        exec_start = exec_start.replace("${" + name + "}", value)
    assert "${" not in exec_start, exec_start
    lines["systemd"] = shlex.split(exec_start.removeprefix("ExecStart="))[1:]
    docker = (DEPLOY / "compose" / "Dockerfile").read_text()
    cmd = next(ln for ln in docker.splitlines() if ln.startswith("CMD "))
    lines["Dockerfile"] = json.loads(cmd.removeprefix("CMD "))
    return lines


def test_shipped_command_lines_parse() -> None:
    """A renamed or dropped option must fail here, not in a pod's crash loop."""
    lines = _shipped_command_lines()
    assert {"systemd", "Dockerfile"} <= set(lines) and len(lines) >= 4
    for where, argv in lines.items():
        args = build_parser().parse_args(argv)
        assert args.command == "run", where
        assert args.metrics_port == 9108, where
        assert str(args.config).startswith("/etc/ews/"), where
        # in a container Prometheus scrapes the pod's or container's address, not its loopback
        container = where != "systemd"
        assert (args.metrics_host == "0.0.0.0") == container, where


def test_k8s_scrape_annotations_point_at_the_metrics_port() -> None:
    for f in sorted((DEPLOY / "k8s").glob("3*.yaml")):
        for d in _docs(f):
            if d["kind"] != "StatefulSet":
                continue
            pod = d["spec"]["template"]
            c = pod["spec"]["containers"][0]
            args = build_parser().parse_args([str(a) for a in c["args"]])
            assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(args.metrics_port), f
            assert {"name": "metrics", "containerPort": args.metrics_port} in c["ports"], f


def _mosquitto_settings(path: Path) -> dict[str, str]:
    out = {}
    for ln in path.read_text().splitlines():
        if ln.strip() and not ln.lstrip().startswith("#"):
            key, _, value = ln.strip().partition(" ")
            out[key] = value.strip()
    return out


def test_every_shipped_broker_keeps_queues_and_a_window_of_three_batches() -> None:
    """The pipeline acknowledges a batch only once it is stored: a broker's in-flight window
    below three batches (one written, one decoded, one received) makes it pause at every
    write. Brokers' own defaults are 20 (Mosquitto) and 32 (EMQX)."""
    from ews.config import InfluxConfig, MqttConfig

    need = 3 * InfluxConfig().batch_size
    assert MqttConfig().receive_maximum >= need  # what MQTT 5 sessions ask for
    confs = [DEPLOY / "mosquitto" / "mosquitto.conf", DEPLOY / "mosquitto" / "mosquitto-secure.conf",
             DEPLOY / "compose" / "mosquitto.conf"]
    for conf in confs:
        s = _mosquitto_settings(conf)
        window = int(s.get("max_inflight_messages", "20"))
        assert window == 0 or window >= need, f"{conf}: max_inflight_messages {window} < {need}"
        assert s.get("max_queued_messages") == "0", f"{conf} drops queued messages past a count"
        assert s.get("queue_qos0_messages") == "true", f"{conf} drops QoS 0 readings while the pipeline is away"
        assert s.get("persistence") == "true", conf
    emqx = [c for d in _docs(DEPLOY / "k8s" / "10-emqx.yaml") if d["kind"] == "StatefulSet"
            for c in d["spec"]["template"]["spec"]["containers"]]
    env = {e["name"]: e["value"] for e in emqx[0]["env"]}
    assert need <= int(env.get("EMQX_MQTT__MAX_INFLIGHT", "32")) <= 65535
    assert env["EMQX_MQTT__MAX_MQUEUE_LEN"] == "0"
    assert env["EMQX_MQTT__MQUEUE_STORE_QOS0"] == "true"


def test_k8s_pods_run_as_the_image_user_with_a_writable_state_volume() -> None:
    """A PersistentVolume is mounted root-owned; the image runs as a fixed non-root user, so the
    pod must name that user's group as fsGroup or the pipeline cannot open its SQLite store."""
    docker = (DEPLOY / "compose" / "Dockerfile").read_text()
    user = next(ln for ln in docker.splitlines() if ln.startswith("USER ")).split()[1]
    uid, gid = (int(x) for x in user.split(":"))
    assert f"--uid {uid} --gid {gid}" in docker and f"groupadd --system --gid {gid} ews" in docker
    pods = [d["spec"]["template"]["spec"] for f in sorted((DEPLOY / "k8s").glob("3*.yaml"))
            for d in _docs(f) if d["kind"] == "StatefulSet"]
    assert len(pods) >= 2
    for pod in pods:
        assert pod["securityContext"] == {"runAsUser": uid, "runAsGroup": gid, "fsGroup": gid, "runAsNonRoot": True}
