"""The sample district shipped as package data: 天河区, its 21 streets, ~300 sensors."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from ews.config import sample_dir
from ews.regions import RegionRegistry
from ews.sensors import DEFAULT_KINDS, SensorRegistry

STREETS = [
    "沙河", "五山", "员村", "车陂", "石牌", "天河南", "林和", "沙东", "兴华", "棠下", "天园",
    "猎德", "冼村", "元岗", "黄村", "龙洞", "长兴", "凤凰", "前进", "珠吉", "新塘",
]
ID_PREFIX = {"rain": "RG-", "water_level": "WL-", "ponding": "PD-", "gas": "GS-", "smoke": "SM-"}


@pytest.fixture(scope="module")
def regions() -> RegionRegistry:
    return RegionRegistry.load(sample_dir() / "regions.yaml")


@pytest.fixture(scope="module")
def sensors(regions: RegionRegistry) -> SensorRegistry:
    return SensorRegistry.load(sample_dir() / "sensors.yaml", regions)


def test_district_and_its_21_streets(regions: RegionRegistry) -> None:
    district = regions.get("440106")
    assert district.name == "天河区"
    streets = regions.streets()
    assert len(streets) == 21
    assert sorted(s.name for s in streets) == sorted(f"{n}街道" for n in STREETS)
    for s in streets:
        assert re.fullmatch(r"440106\d{3}", s.code)
        assert s.parent == "440106"
        assert 3 <= len(s.children) <= 4, s.name
        for c in s.children:
            assert re.fullmatch(r"\d{12}", c) and c.startswith(s.code)
            assert regions.get(c).name.endswith(("社区", "村"))


def test_codes_not_official_are_marked(regions: RegionRegistry) -> None:
    text = (sample_dir() / "regions.yaml").read_text(encoding="utf-8")
    header = "".join(line for line in text.splitlines() if line.startswith("#"))
    assert "sample code" in header.lower()
    assert all(n.sample_code for n in regions.nodes.values() if n.tier != "district")


def test_contacts_by_role_at_every_node(regions: RegionRegistry) -> None:
    wanted = {
        "district": {"duty_officer", "leader"},
        "street": {"duty_officer", "leader"},
        "community": {"duty_officer", "grid_staff"},
    }
    ids = []
    for node in regions.nodes.values():
        assert {c.role for c in node.contacts} == wanted[node.tier], node.name
        for c in node.contacts:
            ids.append(c.id)
            assert c.phone is not None and re.fullmatch(r"138-0000-\d{4}", c.phone)
            assert c.email is not None and c.email.endswith("@example.cn")
            assert c.channels == ["console", "webhook"]
    assert len(ids) == len(set(ids))
    duty = [c for c in regions.get("440106").contacts if c.role == "duty_officer"]
    assert duty[0].name == "区应急管理局值班室"


def test_sensors_load_against_the_regions(sensors: SensorRegistry, regions: RegionRegistry) -> None:
    kinds = Counter(s.kind for s in sensors.sensors)
    assert set(kinds) == set(DEFAULT_KINDS)
    assert 250 <= len(sensors) <= 350
    assert kinds["rain"] >= 60 and kinds["water_level"] >= 20
    assert kinds["ponding"] >= 50 and kinds["gas"] >= 70 and kinds["smoke"] >= 60
    for s in sensors.sensors:
        assert s.community in regions
        assert regions.get(s.community).tier == "community"
        assert s.id.startswith(ID_PREFIX[s.kind])
        assert 23.10 <= s.lat <= 23.25 and 113.29 <= s.lon <= 113.46, s.id


def test_every_street_has_a_rain_gauge(sensors: SensorRegistry, regions: RegionRegistry) -> None:
    with_gauge = {s.street for s in sensors.of_kind("rain")}
    assert with_gauge == {s.code for s in regions.streets()}


def test_water_level_stations(sensors: SensorRegistry) -> None:
    stations = sensors.of_kind("water_level")
    for s in stations:
        p = s.params
        assert p["warning_level"] < p["guarantee_level"] < p["historical_max"], s.id
        assert p["base_level"] < p["warning_level"] - 1.0, s.id
        assert s.tags["river"].endswith("涌")
    rivers = {s.tags["river"] for s in stations}
    assert {"沙河涌", "猎德涌", "车陂涌", "深涌", "程界涌"} <= rivers


def test_ponding_and_gas_tags(sensors: SensorRegistry) -> None:
    for s in sensors.of_kind("ponding"):
        assert s.tags["road"] and s.tags["lane"] == "traffic"
    assert {s.tags["site"] for s in sensors.of_kind("gas")} == {"餐饮", "居民楼", "管网阀井"}
