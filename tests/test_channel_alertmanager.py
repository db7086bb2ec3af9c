"""Warnings as alerts in a real Prometheus Alertmanager (Debian's package) via its v2 API."""

from __future__ import annotations

import pytest

from ews.config import ChannelConfig
from ews.levels import Level
from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ews.servers import AlertmanagerServer, free_port
from notifiers.channels import build_channel
from notifiers.channels.alertmanager import AlertmanagerChannel
from notifiers.channels.base import DeliveryError
from tests.channel_receivers import am_alerts, make_note

pytestmark = pytest.mark.integration


def test_alert_is_shown_raised_and_ended(
    am: AlertmanagerServer, mini_regions: RegionRegistry, mini_sensors: SensorRegistry,
) -> None:
    ch = build_channel(ChannelConfig(name="am", type="alertmanager", url=am.url,
                                     generator_url="https://ews.example.internal/warnings/{id}"))
    assert isinstance(ch, AlertmanagerChannel)
    wid = "W-am00000001"
    ch.send(make_note(mini_regions, mini_sensors, wid=wid, level=Level.YELLOW, transition_id=1))
    (alert,) = am_alerts(am, warning_id=wid)
    assert alert["labels"] == {
        "alertname": "EwsWarning", "severity": "yellow", "warning_id": wid, "rule": "rain-rule",
        "subject": "RG-A1", "kind": "rain", "district": "440106", "street": "440106001",
        "community": "440106001001",
    }
    assert alert["annotations"]["description"].endswith("3小时累计雨量 62.5 毫米")
    assert alert["annotations"]["summary"] == "暴雨黄色预警发布"
    assert alert["annotations"]["region"] == "天河区 车陂街道 车陂社区"
    assert alert["generatorURL"] == f"https://ews.example.internal/warnings/{wid}"
    assert alert["status"]["state"] == "active"

    # raised: the yellow alert ends and a red one fires in its place
    ch.send(make_note(mini_regions, mini_sensors, wid=wid, level=Level.RED, transition="raise", transition_id=2))
    assert [a["labels"]["severity"] for a in am_alerts(am, warning_id=wid)] == ["red"]

    # lifted: nothing of this warning is left firing
    ch.send(make_note(mini_regions, mini_sensors, wid=wid, level=Level.RED, transition="resolve",
                      state="resolved", transition_id=3))
    assert am_alerts(am, warning_id=wid) == []
    ch.close()


def test_drill_label_and_unreachable_server(am: AlertmanagerServer, mini_regions: RegionRegistry) -> None:
    ch = AlertmanagerChannel("am", am.url)
    ch.send(make_note(mini_regions, wid="W-am-drill01", drill=True))
    (alert,) = am_alerts(am, warning_id="W-am-drill01")
    assert alert["labels"]["drill"] == "true"
    ch.close()
    down = AlertmanagerChannel("am", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DeliveryError) as err:
        down.send(make_note(mini_regions))
    assert err.value.retryable is True
    down.close()


def test_group_posts_each_warning(am: AlertmanagerServer, mini_regions: RegionRegistry) -> None:
    from dataclasses import replace

    a = make_note(mini_regions, wid="W-am-group-a", level=Level.ORANGE)
    b = make_note(mini_regions, wid="W-am-group-b", level=Level.YELLOW, community="440106001002")
    items = tuple({"transition": "open", "warning": n.warning, "message": n.message} for n in (a, b))
    ch = AlertmanagerChannel("am", am.url)
    ch.send(replace(a, notice="group", transition="group", items=items, message="汇总"))
    ch.close()
    assert [x["labels"]["severity"] for x in am_alerts(am, warning_id="W-am-group-a")] == ["orange"]
    ((community, severity),) = [(x["labels"]["community"], x["labels"]["severity"])
                                for x in am_alerts(am, warning_id="W-am-group-b")]
    assert (community, severity) == ("440106001002", "yellow")
