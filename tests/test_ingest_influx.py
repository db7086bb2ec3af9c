"""Both InfluxDB write paths with their credentials: v1 /write and influxdb-client's v2 API, against
VictoriaMetrics requiring HTTP basic auth, and the token header checked on a recording server."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest

from ews.config import InfluxConfig, IngestConfig, MqttConfig
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.servers import LocalServers, VictoriaServer, dev_certificates_dir, influxdb, victoria_metrics
from ingest.collector import Collector
from ingest.influx import make_reader, make_writer
from ingest.influx_v1 import InfluxV1, WriteError
from ingest.influx_v2 import InfluxV2
from ingest.process import MessageProcessor

from .conftest import COMM_A1, STREET_A, VICTORIA_PASSWORD, VICTORIA_USER
from .httpstub import HttpStub, QuietHandler

LINES = (f"rain,community={COMM_A1},district=440106,sensor=RG-A1,street={STREET_A} value=1.5 1764300000000\n"
         f"rain,community={COMM_A1},district=440106,sensor=RG-A1,street={STREET_A} value=2.5 1764300060000\n").encode()


def exported(vm: VictoriaServer, match: str, verify: bool | ssl.SSLContext = True) -> list[tuple[int, float]]:
    """Every sample VictoriaMetrics holds for the series selector, sorted by time."""
    httpx.get(f"{vm.url}/internal/force_flush", auth=vm.auth, verify=verify).raise_for_status()
    r = httpx.get(f"{vm.url}/api/v1/export", params={"match[]": match, "start": "0"}, auth=vm.auth, verify=verify)
    r.raise_for_status()
    out = []
    for line in r.text.splitlines():
        row = orjson.loads(line)
        out += list(zip(row["timestamps"], row["values"], strict=True))
    return sorted(out)


def test_v1_and_v2_send_basic_auth(victoria: VictoriaServer) -> None:
    InfluxV1(victoria.url, "auth_v1", VICTORIA_USER, VICTORIA_PASSWORD).write(LINES)
    v2 = InfluxV2(victoria.url, "auth_v2", username=VICTORIA_USER, password=VICTORIA_PASSWORD)
    v2.write(LINES.replace(b"RG-A1", b"RG-V2"))
    v2.close()
    want = [(1764300000000, 1.5), (1764300060000, 2.5)]
    assert exported(victoria, '{__name__="rain_value",db="auth_v1"}') == want
    assert exported(victoria, '{__name__="rain_value",sensor="RG-V2"}') == want
    # without the right credentials nothing is stored, and the failure is one to retry (the spool)
    bad = LINES.replace(b"RG-A1", b"RG-BAD")
    for writer in (InfluxV1(victoria.url, "auth_bad", VICTORIA_USER, "wrong"),
                   InfluxV2(victoria.url, "auth_bad", username=VICTORIA_USER, password="wrong"),
                   InfluxV1(victoria.url, "auth_bad")):
        with pytest.raises(WriteError) as info:
            writer.write(bad)
        assert info.value.retryable and "401" in str(info.value)
    assert exported(victoria, '{__name__="rain_value",sensor="RG-BAD"}') == []


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class H(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            self.send_response(204)
            self.end_headers()

        def do_GET(self) -> None:  # an InfluxQL query
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": b""})
            body = b'{"results":[{"statement_id":0}]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with HttpStub(H) as stub:
        yield stub.url, seen


def test_tokens_are_sent(recorder: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, seen = recorder
    monkeypatch.setenv("EWS_TEST_INFLUX_TOKEN", "tok-123")
    for api in ("v1", "v2"):
        cfg = InfluxConfig(url=url, api=api, database="ews", org="district-440106", bucket="ews/autogen",
                           token_env="EWS_TEST_INFLUX_TOKEN")
        w = make_writer(cfg, cfg.database)
        w.write(LINES)
        w.close()
    # the readers (rules' rebuild, API, backtests, replays) carry it too
    reader = make_reader(cfg)
    assert reader.query("SHOW DATABASES") == []
    reader.close()
    v1, v2, query = seen
    assert v1["auth"] == v2["auth"] == query["auth"] == "Token tok-123"
    assert query["path"].startswith("/query?")
    assert v1["path"].startswith("/write?") and "db=ews" in v1["path"] and "precision=ms" in v1["path"]
    assert v2["path"].startswith("/api/v2/write?")
    assert "bucket=ews%2Fautogen" in v2["path"] and "org=district-440106" in v2["path"] and "precision=ms" in v2["path"]
    assert v1["body"] == v2["body"] == LINES


def test_collector_on_the_v2_api(
    servers: LocalServers, victoria: VictoriaServer, mini_sensors: SensorRegistry, mini_regions: RegionRegistry,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EWS_TEST_VM_PASSWORD", VICTORIA_PASSWORD)
    col = Collector(
        # MQTT 5 here (3.1.1 everywhere else): paho's own message path and Receive Maximum
        MqttConfig(port=servers.mqtt.port, client_id="test-ingest-v2", drill_root=None, protocol="5",
                   receive_maximum=10),
        InfluxConfig(url=victoria.url, api="v2", bucket="ews", username=VICTORIA_USER,
                     password_env="EWS_TEST_VM_PASSWORD", flush_interval_s=0.02),
        MessageProcessor(mini_sensors, mini_regions), ingest_cfg=IngestConfig(), spool_dir=tmp_path / "spool",
    )
    col.start()
    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="test-ingest-v2-pub")
    pub.connect("127.0.0.1", servers.mqtt.port)
    pub.loop_start()
    now = (int(time.time() * 1000) // 1000) * 1000
    sent = [(now - 60_000 * (40 - k), round(0.25 * k, 2)) for k in range(40)]
    try:
        for ts, v in sent + sent[:5]:  # the last five again, as a redelivery would
            pub.publish(f"ews/440106/{STREET_A}/{COMM_A1}/rain/RG-A1", orjson.dumps({"ts": ts, "value": v}), qos=1)
        deadline = time.monotonic() + 30
        while col.stats["messages"] < len(sent) + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert col.stats["spooled"] == 0
        assert exported(victoria, '{__name__="rain_value",sensor="RG-A1",db=""}') == sent
    finally:
        pub.loop_stop()
        col.stop()


def test_v1_write_survives_a_dropped_keep_alive_connection() -> None:
    """A server (or proxy) that closes a kept-alive connection between writes: the next write
    goes again on a new connection instead of failing the batch over to the spool."""
    seen: list[bytes] = []
    peers: set[int] = set()

    class H(QuietHandler):
        protocol_version = "HTTP/1.1"  # promises keep-alive ...

        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            peers.add(self.client_address[1])
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.close_connection = True  # ... and drops it anyway

    with HttpStub(H) as stub:
        w = InfluxV1(stub.url, "ews")
        try:
            for _ in range(3):
                w.write(LINES)
        finally:
            w.close()
    assert seen == [LINES] * 3
    assert len(peers) == 3  # a new connection each time, none of the writes failed


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dev_certificates_dir(Path(tmp_path_factory.mktemp("influx-tls")))


def test_https_with_a_private_ca(tls_dir: Path, tmp_path: Path) -> None:
    """InfluxDB 1.6 and VictoriaMetrics serving HTTPS with a certificate of a private CA: trusted
    through `influxdb.ca_file` on both write paths and the reader, refused without it (an error
    to retry: the spool keeps the batch until the trust is configured)."""
    influx = influxdb(tmp_path / "influx", tls_dir=tls_dir)
    vm = victoria_metrics(tmp_path / "vm", tls_dir=tls_dir)
    influx.start()
    vm.start()
    try:
        assert influx.url.startswith("https://") and vm.url.startswith("https://")
        cfg = InfluxConfig(url=influx.url, database="tls", ca_file=tls_dir / "ca.pem")
        w = make_writer(cfg, "tls")
        w.create_database()
        w.write(LINES)
        w.close()
        reader = make_reader(cfg)
        assert reader.count("rain") == 2
        reader.close()
        v2 = make_writer(InfluxConfig(url=vm.url, api="v2", bucket="tls", ca_file=tls_dir / "ca.pem"), "tls")
        trust = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
        v2.write(LINES.replace(b"RG-A1", b"RG-TLS"))
        v2.close()
        assert [v for _, v in exported(vm, '{__name__="rain_value",sensor="RG-TLS"}', verify=trust)] \
            == [1.5, 2.5]
        for url, api in ((influx.url, "v1"), (vm.url, "v2")):
            untrusted = make_writer(InfluxConfig(url=url, api=api, database="tls"), "tls")
            with pytest.raises(WriteError) as info:
                untrusted.write(LINES)
            assert info.value.retryable and "CERTIFICATE_VERIFY_FAILED" in str(info.value)
            untrusted.close()
    finally:
        vm.stop()
        influx.stop()
