"""The duty dashboard in headless Chromium (Debian's), against a running pipeline.

A gas reading over MQTT opens a warning; the open page shows it without a reload, paints its
community (and street, and district) in the warning's colour, and acknowledging it from the
page changes its state on screen, in the API and in the audit log. Screenshots are saved
under .state/artifacts/dashboard/ for people to look at.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest

from ews.api.auth import token_hash
from ews.config import (
    ApiConfig,
    ChannelConfig,
    Config,
    InfluxConfig,
    MqttConfig,
    NotifierConfig,
    RegistryConfig,
)
from ews.pipeline import Pipeline
from ews.servers import LocalServers

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / ".state" / "artifacts" / "dashboard"
STREET_TOKEN = "street-duty-token"
ORANGE = "rgb(244, 123, 32)"  # --orange in style.css

if not os.path.exists(CHROMIUM):  # pragma: no cover - ./run test installs it
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


@pytest.fixture
def running(servers: LocalServers, influx_db: str, tmp_path: Path) -> Iterator[Pipeline]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: 沙河街道值班室, role: duty_officer, region: '440106001', sha256: {token_hash(STREET_TOKEN)}}}\n",
        encoding="utf-8")
    cfg = Config(
        mqtt=MqttConfig(port=servers.mqtt.port, client_id="dashboard-pipeline"),
        influxdb=InfluxConfig(url=servers.influx_url, database=influx_db, flush_interval_s=0.02),
        registries=RegistryConfig.sample(),
        state_dir=tmp_path / "state",
        notifiers=NotifierConfig(channels=[ChannelConfig(name="console", type="console")]),
        api=ApiConfig(port=0, tokens=tokens),
    )
    p = Pipeline(cfg)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_warning_appears_live_and_is_acknowledged(running: Pipeline, servers: LocalServers) -> None:
    assert running.api is not None
    base = running.api.url
    gas = running.sensors.get("GS-0001")  # 沙河街道 水荫社区, inside the token's street
    assert gas.street == "440106001"
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.set_default_timeout(15_000)
            page.goto(f"{base}/dashboard/")
            page.fill("#token", STREET_TOKEN)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#live[data-state=open]")
            community = page.locator(f'#tree li[data-code="{gas.community}"]')
            assert community.get_attribute("data-level") == "none"
            assert page.locator("#warnings tbody tr").count() == 0
            assert page.locator("#map circle.sensor").count() == sum(
                1 for s in running.sensors.sensors if s.street == gas.street)
            shot(page, "1-quiet")

            # a reading over MQTT, through the real pipeline; the page is not reloaded
            pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="dashboard-pub")
            pub.connect("127.0.0.1", servers.mqtt.port)
            pub.loop_start()
            now = int(time.time() * 1000)
            topic = f"ews/{gas.district}/{gas.street}/{gas.community}/gas/{gas.id}"
            pub.publish(topic, orjson.dumps({"ts": now - 1000, "value": 31.0}), qos=1).wait_for_publish(5)
            pub.loop_stop()
            pub.disconnect()

            row = page.locator("#warnings tbody tr[data-level=orange]")
            row.wait_for()
            (warning,) = running.warnings.open_warnings()
            assert row.get_attribute("data-id") == warning["id"]
            assert "未确认" in row.locator("td.state").inner_text()
            page.wait_for_selector(f'#tree li[data-code="{gas.community}"][data-level=orange]')
            page.wait_for_selector(f'#map circle[data-sensor="{gas.id}"][data-state=orange]')
            dot = community.locator(":scope > .node .dot")
            assert dot.evaluate("e => getComputedStyle(e).backgroundColor") == ORANGE
            # the levels roll up the tree: the street is orange too, another street is not
            assert page.locator('#tree li[data-code="440106001"]').get_attribute("data-level") == "orange"
            shot(page, "2-warning")

            # the chart of the sensor, with its thresholds (gas: orange 25, red 50 % LEL)
            page.click(f'#map circle[data-sensor="{gas.id}"]')
            page.wait_for_selector("#chart polyline.series", state="attached")
            levels = sorted(page.locator("#chart line.threshold").evaluate_all(
                "ls => ls.map(l => l.dataset.level)"))
            assert levels == ["orange", "red"]

            row.locator("button[data-action=ack]").click()
            page.fill("#ack-comment", "已通知网格员到场处置")
            page.click("#ack-ok")
            page.wait_for_selector(f'#warnings tbody tr[data-id="{warning["id"]}"] td.state.acked')
            assert "沙河街道值班室" in row.locator("td.state").inner_text()
            assert row.locator("button[data-action=ack]").count() == 0
            # the tree no longer counts it as unacknowledged
            page.wait_for_function(
                f"""() => !document.querySelector('#tree li[data-code="{gas.community}"] > .node .counts')
                        .textContent.includes('未确认')""")
            shot(page, "3-acknowledged")
        finally:
            browser.close()

    stored = running.store.warning(warning["id"])
    assert stored is not None and stored["acknowledged"] and stored["acknowledged_by"] == "沙河街道值班室"
    acks = [a for a in running.store.audit_log(warning["id"]) if a["action"] == "warning.acknowledge"]
    assert [(a["actor"], a["detail"]["comment"]) for a in acks] == [("沙河街道值班室", "已通知网格员到场处置")]
    # the API agrees with the page
    r = httpx.get(f"{base}/api/v1/warnings/{warning['id']}", headers={"Authorization": f"Bearer {STREET_TOKEN}"})
    assert r.status_code == 200 and r.json()["acknowledged"] is True
    # a running pipeline is ready: connected to the broker, InfluxDB answering
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
