"""The HTTP API: every endpoint, the access-control matrix (role × region × action) and
bad requests, over a pipeline fed directly and the session's real InfluxDB."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ews.servers import LocalServers
from ingest.influx_v1 import InfluxV1
from tests.api_env import S01_GAS, S02_GAS, TOKENS, Env, auth, make_env

pytestmark = pytest.mark.integration

W1_REGION, W2_REGION = "440106001003", "440106002001"
WRITERS = {"duty_officer", "admin"}


@pytest.fixture(scope="module")
def env(servers: LocalServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = make_env(tmp_path_factory.mktemp("api"), servers.influx_url, "api_tests")
    yield e
    e.close()


# --- the access-control matrix, from a table written here, not from ews.api.auth -------------

def inside(token_region: str, code: str) -> bool:
    return token_region == "*" or code.startswith(token_region)


def overlap(token_region: str, code: str) -> bool:
    return token_region == "*" or code.startswith(token_region) or token_region.startswith(code)


@pytest.mark.parametrize("name", list(TOKENS))
def test_access_matrix(env: Env, name: str) -> None:
    role, region = TOKENS[name]
    c, h = env.client, auth(name)
    w1, w2 = env.open_pair()
    targets = {w1: W1_REGION, w2: W2_REGION}
    try:
        listed = {w["id"] for w in c.get("/api/v1/warnings?state=open", headers=h).json()["warnings"]}
        assert listed == {w for w, code in targets.items() if overlap(region, code)}
        for wid, code in targets.items():
            r = c.get(f"/api/v1/warnings/{wid}", headers=h)
            assert r.status_code == (200 if overlap(region, code) else 403), r.text
            may_act = role in WRITERS and inside(region, code)
            r = c.post(f"/api/v1/warnings/{wid}/silence", headers=h, json={"duration_s": 600, "reason": "检修"})
            assert r.status_code == (201 if may_act else 403), r.text
            r = c.post(f"/api/v1/warnings/{wid}/acknowledge", headers=h, json={"comment": f"by {name}"})
            assert r.status_code == (200 if may_act else 403), r.text
            if may_act:
                assert r.json()["acknowledged_by"] == name
            else:
                err = r.json()["error"]
                assert err["code"] == ("role_forbidden" if role not in WRITERS else "region_forbidden")
                assert err["message"]
                denied = [a for a in env.pipeline.store.audit_log(wid) if a["action"] == "api.denied"]
                assert denied and denied[-1]["actor"] == name and denied[-1]["detail"]["action"] == "acknowledge"
        acks = {w: [a["actor"] for a in env.pipeline.store.audit_log(w) if a["action"] == "warning.acknowledge"]
                for w in targets}
        assert acks == {w: [name] if role in WRITERS and inside(region, code) else []
                        for w, code in targets.items()}
        r = c.get("/api/v1/audit.csv", headers=h)
        assert r.status_code == (200 if role in WRITERS else 403)
        r = c.post("/api/v1/silences", headers=h, json={"region": "440106002", "duration_s": 60, "reason": "演练"})
        assert r.status_code == (201 if role in WRITERS and inside(region, "440106002") else 403), r.text
    finally:
        env.resolve_all()
    # reloading the rules changes them for everyone: admins of every region only
    r = c.post("/api/v1/rules/reload", headers=h)
    assert r.status_code == (200 if role == "admin" and region in ("*", "440106") else 403), r.text


# --- authentication -----------------------------------------------------------------------

@pytest.mark.parametrize(("header", "code"), [
    (None, "token_missing"),
    ("Bearer not-a-token", "token_unknown"),
    ("Basic czAxLWR1dHk6eA==", "token_malformed"),
    ("Bearer", "token_malformed"),
])
def test_wrong_or_missing_token_is_401_with_reason(env: Env, header: str | None, code: str) -> None:
    r = env.client.get("/api/v1/warnings", headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_expired_token_and_revocation_by_editing_the_file(tmp_path: Path) -> None:
    from ews.api.auth import TokenStore, token_hash
    from ews.yamlfile import ConfigError

    f = tmp_path / "tokens.yaml"
    f.write_text(f"tokens:\n  - {{name: a, role: viewer, region: '440106', sha256: {token_hash('ta')}, "
                 f"expires: 2020-01-01T00:00:00+08:00}}\n  - {{name: b, role: viewer, region: '440106', "
                 f"sha256: {token_hash('tb')}}}\n", encoding="utf-8")
    store = TokenStore(f, check_s=0)
    with pytest.raises(Exception) as exc:
        store.principal("Bearer ta")
    assert getattr(exc.value, "code", None) == "token_expired"
    assert store.principal("Bearer tb").name == "b"
    # a broken edit keeps the tokens in force and says where the problem is
    f.write_text("tokens:\n  - {name: b, role: boss, region: '440106', sha256: x}\n", encoding="utf-8")
    time.sleep(0.01)
    assert store.principal("Bearer tb").name == "b"
    assert store.last_error is not None and "tokens.yaml:2" in store.last_error
    # deleting the entry revokes the token
    f.write_text(f"tokens:\n  - {{name: c, role: viewer, region: '440106', sha256: {token_hash('tc')}}}\n",
                 encoding="utf-8")
    with pytest.raises(Exception) as exc2:
        store.principal("Bearer tb")
    assert getattr(exc2.value, "code", None) == "token_unknown"
    with pytest.raises(ConfigError) as bad:
        from ews.api.auth import load_tokens
        f.write_text(f"tokens:\n  - {{name: c, role: viewer, region: '440106', sha256: {token_hash('tc')}}}\n"
                     f"  - {{name: c, role: admin, region: '12', sha256: {token_hash('td')}}}\n", encoding="utf-8")
        load_tokens(f)
    text = str(bad.value)
    assert "tokens.yaml:3" in text and "region" in text


# --- warnings -----------------------------------------------------------------------------

def test_warning_filters(env: Env) -> None:
    c, h = env.client, auth("root-admin")
    w1, w2 = env.open_pair()
    try:
        def ids(q: str) -> set[str]:
            r = c.get(f"/api/v1/warnings?{q}", headers=h)
            assert r.status_code == 200, r.text
            return {w["id"] for w in r.json()["warnings"]}

        assert ids("state=open") == {w1, w2}
        assert ids("state=open&region=440106001") == {w1}
        assert ids("state=open&region=440106002001") == {w2}
        assert ids("state=open&level=red") == {w2}
        assert ids("state=open&level=orange&level=red") == {w1, w2}
        assert ids(f"state=open&subject={S01_GAS}") == {w1}
        assert ids("state=open&acknowledged=true") == set()
        ev = env.pipeline.store.warning(w1)
        assert ev is not None
        t = int(ev["opened_event_ts_ms"])
        assert w1 in ids(f"until={t}") and w1 not in ids(f"until={t - 1}")
        assert w1 in ids("since=2020-01-01T00:00:00%2B08:00")
        one = c.get(f"/api/v1/warnings/{w1}", headers=h).json()
        assert one["level"] == "orange" and one["state"] == "open" and one["subject"] == S01_GAS
        assert [tr["type"] for tr in one["transitions"]] == ["open"]
        assert one["audit"][0]["action"] == "warning.open"
    finally:
        env.resolve_all()
    assert env.pipeline.store.warning(w1)["state"] == "resolved"  # type: ignore[index]
    assert w1 in ids("state=resolved") and w1 not in ids("state=open")


@pytest.mark.parametrize(("query", "field"), [
    ("level=purple", "level"), ("state=closed", "state"), ("region=4401", "region"), ("since=yesterday", "since"),
    ("limit=0", "limit"), ("limit=5000", "limit"), ("offset=-1", "offset"),
])
def test_bad_filters_are_422_naming_the_field(env: Env, query: str, field: str) -> None:
    r = env.client.get(f"/api/v1/warnings?{query}", headers=auth("root-admin"))
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and field in err["message"]


def test_acknowledge_errors(env: Env) -> None:
    c, h = env.client, auth("s01-duty")
    assert c.post("/api/v1/warnings/W-nope/acknowledge", headers=h, json={}).status_code == 404
    w1, _ = env.open_pair()
    try:
        assert c.post(f"/api/v1/warnings/{w1}/acknowledge", headers=h, json={"comment": "x" * 501}).status_code == 422
        r = c.post(f"/api/v1/warnings/{w1}/acknowledge", headers=h, content=b"{not json",
                   )
        assert r.status_code == 422
        assert c.post(f"/api/v1/warnings/{w1}/acknowledge", headers=h, json={"extra": 1}).status_code == 422
        assert c.post(f"/api/v1/warnings/{w1}/acknowledge", headers=h).status_code == 200  # no body: no comment
        again = c.post(f"/api/v1/warnings/{w1}/acknowledge", headers=h, json={"comment": "again"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_acknowledged"
    finally:
        env.resolve_all()
    done = c.post(f"/api/v1/warnings/{w1}/acknowledge", headers=h, json={})
    assert done.status_code == 409 and done.json()["error"]["code"] == "resolved"


# --- silences -----------------------------------------------------------------------------

def test_silences_create_list_cancel(env: Env) -> None:
    c, h = env.client, auth("s01-duty")
    r = c.post("/api/v1/silences", headers=h, json={"rule": "gas", "duration_s": 3600, "reason": "管网检修"})
    assert r.status_code == 201, r.text
    s = r.json()
    # a street's token silencing a rule silences it in its street, not the whole district
    assert s["region"] == "440106001" and s["rule"] == "gas" and s["author"] == "s01-duty" and s["active"]
    assert 3_599_000 <= s["ends_ts_ms"] - s["starts_ts_ms"] <= 3_601_000
    listed = {x["id"] for x in c.get("/api/v1/silences", headers=h).json()["silences"]}
    assert s["id"] in listed
    other = {x["id"] for x in c.get("/api/v1/silences", headers=auth("s02-admin")).json()["silences"]}
    assert s["id"] not in other
    # only inside one's region
    assert c.delete(f"/api/v1/silences/{s['id']}", headers=auth("s02-admin")).status_code == 403
    assert c.delete(f"/api/v1/silences/{s['id']}", headers=h).status_code == 204
    again = c.delete(f"/api/v1/silences/{s['id']}", headers=h)
    assert again.status_code == 409 and again.json()["error"]["code"] == "silence_ended"
    assert c.delete("/api/v1/silences/S-none", headers=h).status_code == 404
    audit = [(a["actor"], a["action"]) for a in env.pipeline.store.audit_log() if a["action"].startswith("silence")]
    assert ("s01-duty", "silence.create") in audit and ("s01-duty", "silence.cancel") in audit
    assert s["id"] not in {x["id"] for x in c.get("/api/v1/silences", headers=h).json()["silences"]}


@pytest.mark.parametrize(("body", "code"), [
    ({"rule": "gas", "duration_s": 60}, "invalid_request"),  # no reason
    ({"rule": "gas", "duration_s": 60, "ends_ts_ms": 9_999_999_999_999, "reason": "x"}, "invalid_request"),
    ({"rule": "gas", "reason": "x"}, "invalid_request"),  # no end
    ({"rule": "gas", "duration_s": -5, "reason": "x"}, "invalid_request"),
    ({"sensor": "NOPE-1", "duration_s": 60, "reason": "x"}, "unknown_sensor"),
    ({"region": "440106999", "duration_s": 60, "reason": "x"}, "unknown_region"),
    ({"rule": "no-such-rule", "duration_s": 60, "reason": "x"}, "unknown_rule"),
    ({"rule": "gas", "ends_ts_ms": 1_000, "reason": "x"}, "invalid_silence"),  # ended long ago
])
def test_bad_silences_are_422(env: Env, body: dict[str, object], code: str) -> None:
    r = env.client.post("/api/v1/silences", headers=auth("root-admin"), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code


# --- sensors, readings, regions -----------------------------------------------------------

def test_sensors_last_reading_health_and_level(env: Env) -> None:
    c, h = env.client, auth("s01-viewer")
    rows = c.get("/api/v1/sensors", headers=h).json()["sensors"]
    # a street's token sees that street's sensors only
    assert {s["id"] for s in rows} == {s.id for s in env.pipeline.sensors.sensors if s.street == "440106001"}
    t = env.feed(S01_GAS, 31.0)
    try:
        s = c.get(f"/api/v1/sensors/{S01_GAS}", headers=h).json()
        assert s["last"]["ts_ms"] == t and s["last"]["value"] == 31.0
        assert s["health"] == "ok" and s["level"] == "orange" and len(s["warnings"]) == 1
        assert any(r.get("rule") == "gas" and r.get("thresholds", {}).get("value") == {"orange": 25.0, "red": 50.0}
                   for r in s["rules"])
        fresh = [x["id"] for x in c.get("/api/v1/sensors?health=ok", headers=h).json()["sensors"]]
        assert S01_GAS in fresh
    finally:
        env.resolve_all()
    # nothing arrived for more than three intervals: stale
    idx = env.pipeline.sensors.index["PD-0001"] if "PD-0001" in env.pipeline.sensors else None
    if idx is not None:
        from ews.models import ReadingBatch
        long_ago = int(time.time() * 1000) - 4 * 300_000 - 60_000
        env.pipeline.latest.update(ReadingBatch.of([idx], [long_ago], [1.0]), long_ago)
        pd = c.get("/api/v1/sensors/PD-0001", headers=auth("root-admin")).json()
        assert pd["health"] == "stale"
    assert c.get(f"/api/v1/sensors/{S02_GAS}", headers=h).status_code == 403
    assert c.get("/api/v1/sensors/NOPE", headers=h).status_code == 404
    assert c.get("/api/v1/sensors?health=dead", headers=h).status_code == 422


def test_readings_with_rolling_sums_and_thresholds(env: Env) -> None:
    gauge = next(s for s in env.pipeline.sensors.sensors if s.kind == "rain")
    step = 300_000
    end = (int(time.time() * 1000) // step) * step
    series = [(end - (47 - i) * step, [0.5, 2.0, 4.0][i % 3]) for i in range(48)]  # four hours
    db = InfluxV1(env.pipeline.cfg.influxdb.url, env.pipeline.cfg.influxdb.database)
    db.create_database()
    db.write("".join(f"rain,sensor={gauge.id},community={gauge.community},district={gauge.district},"
                     f"street={gauge.street} value={v} {t}\n" for t, v in series).encode())
    db.close()
    env.pipeline.latest.update(__import__("ews.models").models.ReadingBatch.of(
        [env.pipeline.sensors.index[gauge.id]], [end], [series[-1][1]]), end)
    r = env.client.get(f"/api/v1/sensors/{gauge.id}/readings?hours=2", headers=auth("root-admin"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["until_ms"] == end and body["from_ms"] == end - 2 * 3_600_000
    by = {s["measure"]: s for s in body["series"]}
    shown = [(t, v) for t, v in series if t > end - 2 * 3_600_000]
    assert [tuple(p) for p in by["value"]["points"]] == shown
    # the 3-hour sum at each shown time, from every reading in (t - 3 h, t]
    want = [(t, round(sum(v for u, v in series if t - 3 * 3_600_000 < u <= t), 6)) for t, _ in shown]
    assert [tuple(p) for p in by["rain_3h"]["points"]] == want
    lines = {(th["measure"], th["level"]): th["value"] for th in body["thresholds"]}
    assert lines[("rain_3h", "orange")] == 50.0 and lines[("rain_3h", "red")] == 100.0
    assert env.client.get(f"/api/v1/sensors/{gauge.id}/readings?hours=0", headers=auth("root-admin")).status_code == 422


def test_region_tree_counts_by_level(env: Env) -> None:
    c = env.client
    env.open_pair()
    try:
        (d,) = c.get("/api/v1/regions", headers=auth("district-viewer")).json()["regions"]
        assert d["code"] == "440106" and d["tier"] == "district" and d["level"] == "red"
        assert d["counts"] == {"blue": 0, "yellow": 0, "orange": 1, "red": 1} and d["unacknowledged"] == 2
        streets = {s["code"]: s for s in d["children"]}
        assert streets["440106001"]["level"] == "orange" and streets["440106002"]["level"] == "red"
        assert streets["440106003"]["level"] == "none"
        comm = {x["code"]: x for x in streets["440106001"]["children"]}
        assert comm[W1_REGION]["level"] == "orange" and comm[W1_REGION]["counts"]["orange"] == 1
        assert sum(s["sensors"] for s in d["children"]) == len(env.pipeline.sensors)
        # a street's token gets its street as the root, and may not ask for the district
        (s01,) = c.get("/api/v1/regions", headers=auth("s01-viewer")).json()["regions"]
        assert s01["code"] == "440106001" and s01["level"] == "orange"
        assert c.get("/api/v1/regions?root=440106", headers=auth("s01-viewer")).status_code == 403
        assert c.get("/api/v1/regions?root=440106999", headers=auth("root-admin")).status_code == 404
    finally:
        env.resolve_all()


# --- rules, audit, me, health -------------------------------------------------------------

def test_rules_in_force(env: Env) -> None:
    body = env.client.get("/api/v1/rules", headers=auth("s01-viewer")).json()
    assert body["version"] == env.pipeline.ruleset.version
    gas = next(r for r in body["rules"] if r["id"] == "gas")
    assert gas["conditions"] == {"value": {"orange": 25.0, "red": 50.0}} and gas["subjects"] > 0


def test_rules_reload_refuses_a_bad_file_and_keeps_the_rules(tmp_path: Path, servers: LocalServers) -> None:
    import shutil

    from rules.loader import DEFAULTS_DIR

    rules = tmp_path / "rules"
    shutil.copytree(DEFAULTS_DIR, rules)
    e = make_env(tmp_path, servers.influx_url, "api_reload", rules=rules)
    try:
        before = e.pipeline.ruleset.version
        (rules / "gas.yaml").write_text((rules / "gas.yaml").read_text().replace("orange: 25", "orange: [25"))
        r = e.client.post("/api/v1/rules/reload", headers=auth("root-admin"))
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["code"] == "rules_invalid" and err["problems"][0]["file"].endswith("gas.yaml")
        assert err["problems"][0]["line"] is not None
        assert e.pipeline.ruleset.version == before
        (rules / "gas.yaml").write_text((rules / "gas.yaml").read_text().replace("orange: [25", "orange: 20"))
        r = e.client.post("/api/v1/rules/reload", headers=auth("root-admin"))
        assert r.status_code == 200, r.text
        assert r.json()["changed"] is True and r.json()["version_after"] == e.pipeline.ruleset.version != before
        # the new threshold is in force: 22 % LEL now opens an orange warning
        e.feed(S01_GAS, 22.0)
        w = e.pipeline.store.find_open("gas", S01_GAS)
        assert w is not None and w["level"] == 3
        actions = [(a["actor"], a["action"]) for a in e.pipeline.store.audit_log() if a["action"].startswith("rules")]
        assert actions == [("root-admin", "rules.reload_refused"), ("root-admin", "rules.reload")]
    finally:
        e.close()


def test_audit_export_csv_is_scoped(env: Env) -> None:
    c = env.client
    w1, w2 = env.open_pair()
    try:
        assert c.post(f"/api/v1/warnings/{w1}/acknowledge", headers=auth("s01-duty"),
                      json={"comment": "到场"}).status_code == 200
        assert c.post(f"/api/v1/warnings/{w2}/acknowledge", headers=auth("s02-admin"), json={}).status_code == 200
    finally:
        env.resolve_all()

    def export(name: str, q: str = "") -> list[dict[str, str]]:
        r = c.get(f"/api/v1/audit.csv?{q}", headers=auth(name))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.content.startswith("\ufeff".encode())
        return list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))

    mine = export("s01-duty")
    assert {row["warning_id"] for row in mine if row["warning_id"]} >= {w1}
    assert w2 not in {row["warning_id"] for row in mine}
    odd = [(row["region"], row["action"]) for row in mine if not row["region"].startswith("440106001")]
    assert all(row["region"] and overlap("440106001", row["region"]) for row in mine), odd
    acks = [row for row in export("root-admin", "action=warning.acknowledge") if row["warning_id"] in (w1, w2)]
    assert [(row["actor"], row["warning_id"]) for row in acks] == [("s01-duty", w1), ("s02-admin", w2)]
    assert '"comment":"到场"' in acks[0]["detail"]
    rows = c.get(f"/api/v1/audit?warning={w1}", headers=auth("s01-duty")).json()["rows"]
    assert [r["action"] for r in rows][:2] == ["warning.open", "warning.acknowledge"]
    assert c.get("/api/v1/audit?since=never", headers=auth("s01-duty")).status_code == 422


def test_me(env: Env) -> None:
    me = env.client.get("/api/v1/me", headers=auth("s01-duty")).json()
    assert me["name"] == "s01-duty" and me["role"] == "duty_officer" and me["region"] == "440106001"
    assert me["region_name"] == "天河区 沙河街道"
    assert me["may"] == {"read": True, "acknowledge": True, "silence": True, "audit_export": True,
                         "rules_reload": False}


def test_health_readiness_metrics_and_dashboard_need_no_token(env: Env) -> None:
    c = env.client
    assert c.get("/healthz").json() == {"status": "ok"}
    r = c.get("/readyz")
    # the pipeline of these tests never connects to the broker; InfluxDB is the real one
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["mqtt"]["ok"] is False and checks["influxdb"]["ok"] is True and checks["store"]["ok"] is True
    m = c.get("/metrics")
    assert m.status_code == 200 and "ews_api_requests_total" in m.text
    page = c.get("/dashboard/")
    assert page.status_code == 200 and "值守台" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside
    assert c.get("/", follow_redirects=False).headers["location"] == "/dashboard/"
    assert c.get("/api/v1/nothing-here", headers=auth("root-admin")).json()["error"]["code"] == "not_found"
