"""Start Mosquitto and InfluxDB on free loopback ports, under a state folder we own.

Used by `ews demo` and by the test suite, so both run on the real servers without touching
any system-wide instance. Configuration comes from `deploy/`, with ports and data paths filled
in. Each server can be stopped, killed and restarted on the same port and data, which the
fault tests need.
"""

from __future__ import annotations

import getpass
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

log = logging.getLogger(__name__)

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_tcp(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class ManagedServer:
    name: str
    argv: list[str]
    port: int
    data_dir: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None
    ready_timeout_s: float = 30.0

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        if not self.wait_ready(time.monotonic() + self.ready_timeout_s):
            tail = self.log_file.read_text(errors="replace")[-2000:]
            self.stop()
            raise ServerError(f"{self.name} did not become ready on 127.0.0.1:{self.port}\n{tail}")

    def wait_ready(self, deadline: float) -> bool:
        return _wait_tcp(self.port, deadline)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class HttpServer(ManagedServer):
    """A server that says it is ready on an HTTP path of its own."""

    scheme: str = "http"  # https: TLS with a certificate of the loopback CA (dev_certificates_dir)

    ready_path = "/"
    ready_status = 200

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def auth(self) -> tuple[str, str] | None:
        return None

    def wait_ready(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                # readiness only: whether the certificate is trusted is what the clients test
                r = httpx.get(f"{self.url}{self.ready_path}", auth=self.auth, timeout=0.5, verify=False)
                if r.status_code == self.ready_status:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False


@dataclass
class InfluxServer(HttpServer):
    ready_path = "/ping"
    ready_status = 204


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
    if path is None:
        raise ServerError(
            f"{binary} is not installed; install Debian's package with "
            f"`apt-get install {package}` (the README's commands do this for you)"
        )
    return path


def _write_conf(template: Path, dest: Path, **values: object) -> Path:
    """The deploy/ template with its {placeholders} filled in, written to dest."""
    if not template.is_file():
        # deploy/ sits beside the packages in a checkout and is not part of the wheel
        raise ServerError(
            f"server configuration template {template} not found: local servers start from the "
            f"deploy/ folder of a source checkout (run `./run demo` there)"
        )
    text = template.read_text()
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    dest.write_text(text)
    return dest


def mosquitto(state_dir: Path, port: int | None = None, settings: Mapping[str, object] | None = None) -> ManagedServer:
    """Mosquitto on deploy/mosquitto/mosquitto.conf; `settings` replace that file's own values
    (tests of a broker configured otherwise, e.g. a small max_inflight_messages)."""
    return _mosquitto("mosquitto", "mosquitto.conf", state_dir, port, settings)


def dev_certificates_dir(out_dir: Path) -> Path:
    """A loopback CA and broker certificate (see ews.brokerauth.dev_certificates)."""
    from ews.brokerauth import dev_certificates

    dev_certificates(out_dir)
    return out_dir


def mosquitto_secure(state_dir: Path, auth_dir: Path, tls_dir: Path, port: int | None = None) -> ManagedServer:
    """Mosquitto with TLS, password file and ACL (deploy/mosquitto/mosquitto-secure.conf)."""
    return _mosquitto("mosquitto-secure", "mosquitto-secure.conf", state_dir, port, None,
                      auth_dir=auth_dir, tls_dir=tls_dir)


def _mosquitto(
    name: str, template: str, state_dir: Path, port: int | None, settings: Mapping[str, object] | None,
    **values: Path,
) -> ManagedServer:
    """Mosquitto on a deploy/mosquitto template, its data under state_dir/name."""
    binary = _require("mosquitto", "mosquitto")
    port = port or free_port()
    data = state_dir / name
    data.mkdir(parents=True, exist_ok=True)
    conf_file = _write_conf(
        DEPLOY_DIR / "mosquitto" / template, data / "mosquitto.conf",
        port=port, data_dir=data, user=getpass.getuser(), **values,
    )
    if settings:
        _set_options(conf_file, settings)
    return ManagedServer(name, [binary, "-c", str(conf_file)], port, data, data / "stdout.log")


def _set_options(conf_file: Path, settings: Mapping[str, object], sep: str = " ") -> None:
    """Replace the values of options the file sets (one `option{sep}value` a line)."""
    lines = conf_file.read_text().splitlines()
    for option, value in settings.items():
        at = [i for i, ln in enumerate(lines) if ln.strip().split(" ", 1)[0] == option]
        if not at:
            raise ServerError(f"{conf_file} sets no {option} to replace")
        for i in at:
            indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
            lines[i] = f"{indent}{option}{sep}{value}"
    conf_file.write_text("\n".join(lines) + "\n")


def influxdb(
    state_dir: Path, port: int | None = None, settings: Mapping[str, str] | None = None, tls_dir: Path | None = None,
) -> InfluxServer:
    """InfluxDB 1.x on deploy/influxdb/influxdb.conf; `settings` replace that file's own values
    (`key = value` lines, the value as TOML: '"0s"', "1000"); `tls_dir` (dev_certificates_dir)
    serves HTTPS with its server certificate."""
    binary = _require("influxd", "influxdb")
    port = port or free_port()
    data = state_dir / "influxdb"
    data.mkdir(parents=True, exist_ok=True)
    conf_file = _write_conf(
        DEPLOY_DIR / "influxdb" / "influxdb.conf", data / "influxdb.conf",
        http_port=port, rpc_port=free_port(), data_dir=data,
    )
    settings = dict(settings or {})
    if tls_dir is not None:
        settings.update({"https-enabled": "true", "https-certificate": f'"{tls_dir / "server.pem"}"',
                         "https-private-key": f'"{tls_dir / "server-key.pem"}"'})
    if settings:
        _set_options(conf_file, settings, " = ")
    return InfluxServer("influxdb", [binary, "-config", str(conf_file)], port, data, data / "stdout.log",
                        scheme="https" if tls_dir is not None else "http")


@dataclass
class AlertmanagerServer(HttpServer):
    ready_path = "/-/ready"


def alertmanager(state_dir: Path, port: int | None = None) -> AlertmanagerServer:
    """Debian's prometheus-alertmanager, clustering off (an empty cluster listen address)."""
    binary = _require("prometheus-alertmanager", "prometheus-alertmanager")
    port = port or free_port()
    data = state_dir / "alertmanager"
    data.mkdir(parents=True, exist_ok=True)
    conf_file = _write_conf(DEPLOY_DIR / "alertmanager" / "alertmanager.yml", data / "alertmanager.yml")
    argv = [
        binary, f"--config.file={conf_file}", f"--storage.path={data / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
    ]
    return AlertmanagerServer("alertmanager", argv, port, data, data / "stdout.log")


@dataclass
class PrometheusServer(HttpServer):
    ready_path = "/-/ready"


def prometheus(state_dir: Path, targets: list[str], alertmanager_address: str, interval_s: float = 1.0,
               port: int | None = None) -> PrometheusServer:
    """Debian's prometheus on deploy/prometheus/: the shipped rules, and the shipped `ews` job
    aimed at `targets` (host:port), scraped and evaluated every `interval_s` instead of 15 s."""
    binary = _require("prometheus", "prometheus")
    port = port or free_port()
    data = state_dir / "prometheus"
    data.mkdir(parents=True, exist_ok=True)
    shipped = DEPLOY_DIR / "prometheus"
    conf = yaml.safe_load((shipped / "prometheus.yml").read_text())
    every = f"{round(interval_s * 1000)}ms"
    conf["global"].update(scrape_interval=every, evaluation_interval=every)
    conf["rule_files"] = [str(shipped / f) for f in conf["rule_files"]]
    conf["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager_address]}]
    (job,) = [j for j in conf["scrape_configs"] if j["job_name"] == "ews"]
    job["static_configs"] = [{"targets": targets}]
    conf_file = data / "prometheus.yml"
    conf_file.write_text(yaml.safe_dump(conf))
    argv = [binary, f"--config.file={conf_file}", f"--storage.tsdb.path={data / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    return PrometheusServer("prometheus", argv, port, data, data / "stdout.log")


@dataclass
class VictoriaServer(HttpServer):
    """VictoriaMetrics: InfluxDB line protocol on /write and /api/v2/write (no InfluxQL)."""

    username: str | None = None
    password: str | None = None

    ready_path = "/health"

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password or "") if self.username else None


def victoria_metrics(
    state_dir: Path, port: int | None = None, username: str | None = None, password: str | None = None,
    tls_dir: Path | None = None,
) -> VictoriaServer:
    """Debian's victoria-metrics; with a user, every request needs HTTP basic auth; with
    `tls_dir` (dev_certificates_dir), HTTPS. Samples of a series with the same millisecond are
    deduplicated, as InfluxDB overwrites the same point."""
    binary = _require("victoria-metrics", "victoria-metrics")
    port = port or free_port()
    data = state_dir / f"victoria-{port}"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={data / 'data'}",
        "-retentionPeriod=100y", "-dedup.minScrapeInterval=1ms", "-search.latencyOffset=0s",
        "-loggerLevel=WARN",
    ]
    if username:
        argv += [f"-httpAuth.username={username}", f"-httpAuth.password={password or ''}"]
    if tls_dir is not None:
        argv += ["-tls", f"-tlsCertFile={tls_dir / 'server.pem'}", f"-tlsKeyFile={tls_dir / 'server-key.pem'}"]
    return VictoriaServer("victoria-metrics", argv, port, data, data / "stdout.log",
                          scheme="https" if tls_dir is not None else "http", username=username, password=password)


@dataclass
class LocalServers:
    mqtt: ManagedServer
    influx: InfluxServer
    extra: list[ManagedServer] = field(default_factory=list)

    @property
    def influx_url(self) -> str:
        return self.influx.url

    def stop(self) -> None:
        for s in (*self.extra, self.mqtt, self.influx):
            s.stop()


@contextmanager
def local_servers(state_dir: Path) -> Iterator[LocalServers]:
    """Mosquitto and InfluxDB on free loopback ports; stopped on exit whatever happens."""
    servers = LocalServers(mosquitto(state_dir), influxdb(state_dir))
    try:
        servers.mqtt.start()
        servers.influx.start()
        log.info("mosquitto on 127.0.0.1:%d, influxdb on %s", servers.mqtt.port, servers.influx.url)
        yield servers
    finally:
        servers.stop()
