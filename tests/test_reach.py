"""Contacts and routing targets that no configured channel reaches are named at start-up."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ews.config import load_config, sample_dir
from ews.pipeline import Pipeline
from ews.regions import RegionRegistry
from notifiers.reach import unreachable
from notifiers.roster import Roster
from notifiers.routing import RoutingPolicy, load_policy


def test_contacts_and_targets_without_a_configured_channel_are_listed(mini_regions: RegionRegistry) -> None:
    policy = load_policy()
    assert unreachable(mini_regions, None, policy, ["console", "webhook"]) == []
    lines = unreachable(mini_regions, None, policy, ["console"])
    assert lines == ["the public (routing policy, levels.red): its channels are [webhook]"]  # the feeds
    lines = unreachable(mini_regions, None, policy, ["sms"])  # a channel renamed in the configuration
    people = [c for node in mini_regions.nodes.values() for c in node.contacts]
    assert len(lines) == len(people) + 1
    assert any(line.startswith(f"{people[0].id} ({people[0].name}, {people[0].role} at ") for line in lines)
    esc = RoutingPolicy.model_validate({**policy.model_dump(), "escalation": {"channels": ["wecom"]}})
    lines = unreachable(mini_regions, None, esc, ["console", "webhook"])
    assert lines == ["escalations (routing policy): their channels are [wecom]"]


def test_people_of_the_duty_roster_are_checked_too(tmp_path: Path, mini_regions: RegionRegistry) -> None:
    roster = tmp_path / "roster.yaml"
    roster.write_text(
        "people:\n  - {id: P-1, name: 张伟, channels: [pager]}\n"
        "shifts:\n  - {node: '440106', role: duty_officer, daily: '08:00-20:00', first_day: 2024-01-01,"
        " last_day: 2030-12-31, contacts: [P-1]}\n", encoding="utf-8")
    lines = unreachable(mini_regions, Roster.load(roster, mini_regions), load_policy(), ["console", "webhook"])
    assert lines == ["P-1 (张伟, duty_officer at 440106, duty roster): its channels are [pager]"]


def test_the_pipeline_says_so_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(sample_dir() / "config.yaml")
    cfg.state_dir = tmp_path / "state"
    regions = (sample_dir() / "regions.yaml").read_text(encoding="utf-8")
    # one street's duty room on a channel the configuration spells differently
    (tmp_path / "regions.yaml").write_text(
        regions.replace("channels: [console, webhook]}", "channels: [Console]}", 1), encoding="utf-8")
    cfg.registries.regions = tmp_path / "regions.yaml"
    with caplog.at_level(logging.ERROR, "notifiers.reach"):
        p = Pipeline(cfg)
    try:
        assert REGISTRY.get_sample_value("ews_recipients_unreachable") == 2  # that person, and the public
        assert "no configured channel reaches TH-DUTY (区应急管理局值班室, duty_officer at 440106" in caplog.text
        assert "its channels are [Console]" in caplog.text
    finally:
        p.stop()
