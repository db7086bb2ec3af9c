"""Every channel type from one configuration file: fields per type, paths, secrets from env."""

from __future__ import annotations

from pathlib import Path

import pytest

from ews.config import ChannelConfig, load_config, sample_dir
from ews.servers import LocalServers
from ews.yamlfile import ConfigError
from notifiers.channels import build_channels
from notifiers.channels.cap import CapChannel
from notifiers.channels.devices import DeviceChannel
from notifiers.channels.smtp import SmtpChannel

CONFIG = """
registries: {{regions: {regions}, sensors: {sensors}}}
notifiers:
  channels:
    - {{name: console, type: console}}
    - {{name: wecom, type: wecom, token_env: T_WECOM_KEY, msgtype: text, mention: true}}
    - {{name: dingtalk, type: dingtalk, token_env: T_DING_TOKEN, secret_env: T_DING_SECRET}}
    - {{name: feishu, type: feishu, token_env: T_FEISHU_HOOK, secret_env: T_FEISHU_SECRET}}
    - {{name: email, type: smtp, host: smtp.example.cn, sender: ews@example.cn, username: ews,
       password_env: T_SMTP_PASSWORD, sender_name: 天河区应急管理局}}
    - name: sms
      type: sms
      secret_env: T_SMS_TOKEN
      request:
        url: https://sms.example.cn/send
        headers: {{Authorization: "Bearer {{secret}}"}}
        body: {{to: "{{phone}}", text: "{{message}}", ref: "{{idempotency_key}}"}}
    - {{name: devices, type: devices, url: "mqtt://127.0.0.1:{mqtt_port}", devices: devices.yaml}}
    - {{name: am, type: alertmanager, url: "http://127.0.0.1:9093", ttl_s: 3600}}
    - {{name: cap, type: cap, db: state/cap.sqlite, sender: ews@example.cn, sender_name: 天河区应急管理局}}
"""

ENV = {"T_WECOM_KEY": "k", "T_DING_TOKEN": "t", "T_DING_SECRET": "s", "T_FEISHU_HOOK": "h",
       "T_FEISHU_SECRET": "f", "T_SMTP_PASSWORD": "p", "T_SMS_TOKEN": "x"}


def test_all_types_from_one_file(tmp_path: Path, servers: LocalServers, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "devices.yaml").write_text((sample_dir() / "devices.yaml").read_text())
    f = tmp_path / "config.yaml"
    f.write_text(CONFIG.format(regions=sample_dir() / "regions.yaml", sensors=sample_dir() / "sensors.yaml",
                               mqtt_port=servers.mqtt.port))
    cfg = load_config(f)
    by_name = {c.name: c for c in cfg.notifiers.channels}
    assert by_name["devices"].devices == tmp_path / "devices.yaml"  # relative to the file
    assert by_name["cap"].db == tmp_path / "state" / "cap.sqlite"
    channels = build_channels(cfg.notifiers.channels)
    try:
        assert list(channels) == [c.name for c in cfg.notifiers.channels]
        assert isinstance(channels["email"], SmtpChannel) and channels["email"].password == "p"
        assert isinstance(channels["devices"], DeviceChannel)
        assert isinstance(channels["cap"], CapChannel) and (tmp_path / "state" / "cap.sqlite").exists()
    finally:
        for ch in channels.values():
            ch.close()


def test_missing_secret_and_misplaced_fields_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_ABSENT", raising=False)
    with pytest.raises(ConfigError, match="T_ABSENT"):
        build_channels([ChannelConfig(name="dd", type="dingtalk", token_env="T_ABSENT")])
    f = tmp_path / "config.yaml"
    f.write_text(f"registries: {{regions: {sample_dir() / 'regions.yaml'}, sensors: {sample_dir() / 'sensors.yaml'}}}\n"
                 "notifiers:\n  channels:\n    - {name: mail, type: smtp, host: h, sender: a@b.cn,\n"
                 "       devices: d.yaml}\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "config.yaml:4" in str(err.value) and "devices" in str(err.value)
    with pytest.raises(ValueError, match="needs host and sender"):
        build_channels([ChannelConfig(name="mail", type="smtp", host="h")])
    with pytest.raises(ValueError, match="needs db, sender and sender_name"):
        build_channels([ChannelConfig(name="cap", type="cap", sender="x@y.cn")])


def test_english_texts_and_bad_template_fields(tmp_path: Path, mini_regions: object) -> None:
    from notifiers.channels.texts import ChannelTexts, packaged
    from tests.channel_receivers import make_note

    note = make_note(mini_regions)  # type: ignore[arg-type]
    en = packaged("en")
    assert en.fields(note)["title"] == "orange rainstorm warning issued"
    assert en.render("email_subject", note) == "[orange warning] 天河区 车陂街道 车陂社区: rainstorm warning issued"
    zh = (Path(__file__).parent.parent / "notifiers" / "templates" / "channels.zh-CN.yaml").read_text()
    bad = tmp_path / "channels.yaml"
    bad.write_text(zh.replace('sms: "{message}"', 'sms: "{message} {phone}"'))
    with pytest.raises(ConfigError) as err:
        ChannelTexts.load("zh-CN", bad)
    (problem,) = err.value.problems
    assert problem.field == "sms" and "unknown field {phone}" in problem.reason
    assert problem.line is not None and bad.read_text().splitlines()[problem.line - 1].startswith("sms:")
