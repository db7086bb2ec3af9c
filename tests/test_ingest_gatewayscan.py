"""The compiled gateway scanner reads exactly what msgspec reads, or leaves the payload alone.

The scanner is an accelerator: whatever it accepts must come out bit for bit as the msgspec
path (`plain_batch`) gives it, and whatever it does not recognise must go the usual way, so
that the processor's outcome (rows, their order, every rejection with its reading index) is
the same with the scanner as without it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from ews.regions import RegionRegistry
from ews.sensors import SensorRegistry
from ingest import gatewayscan
from ingest.decode import SECONDS_BELOW, plain_batch
from ingest.gatewayscan import GatewayScanner
from ingest.lineproto import LineBuilder
from ingest.process import MessageProcessor, Outcome

from .conftest import COMM_A1, DISTRICT, STREET_A, STREET_B

NOW = 1_764_300_000_000
GW_A = f"ews/{DISTRICT}/{STREET_A}/batch/GW-1"


def _scanner(sensors: SensorRegistry) -> GatewayScanner:
    return GatewayScanner([s.id for s in sensors.sensors], [s.community for s in sensors.sensors])


def _scan(g: GatewayScanner, payload: bytes, prefix: str = STREET_A) -> tuple[int, list[Any]]:
    where = g.region(prefix)
    assert where is not None
    counts, s, t, v = g.scan([payload], [where])
    return counts[0], list(zip(s.tolist(), t.tolist(), [x.hex() for x in v.tolist()], strict=True))


def _msgspec(sensors: SensorRegistry, payload: bytes, prefix: str = STREET_A) -> list[Any] | None:
    cols = plain_batch(payload)
    if cols is None:
        return None
    rows = []
    for sid, t, v in zip(*cols, strict=True):
        idx = sensors.index.get(sid)
        if idx is None or not sensors.sensors[idx].community.startswith(prefix):
            return None
        rows.append((idx, t if t >= SECONDS_BELOW else t * 1000, float(v).hex()))
    return rows


def test_common_forms_are_read_exactly(mini_sensors: SensorRegistry) -> None:
    g = _scanner(mini_sensors)
    items = [{"sensor": "RG-A1", "ts": NOW, "value": 1.5}, {"sensor": "WL-A1", "ts": NOW // 1000, "value": 4},
             {"sensor": "RG-A2", "ts": NOW + 1, "value": -0.0}, {"sensor": "PD-A1", "ts": NOW, "value": 0.1},
             {"sensor": "RG-A1", "ts": NOW, "value": 123456789012345}, {"sensor": "RG-A1", "ts": NOW, "value": 1e22},
             {"sensor": "RG-A1", "ts": NOW, "value": 2.5e-7}]
    tabbed = b" \r\n" + json.dumps({"readings": items}, indent="\t").encode() + b"\n"
    forms = [orjson.dumps({"readings": items}), orjson.dumps(items), json.dumps({"readings": items}).encode(),
             json.dumps(items, indent=2).encode(), tabbed,
             orjson.dumps({"readings": [{k: i[k] for k in ("value", "ts", "sensor")} for i in items]})]
    for p in forms:
        n, rows = _scan(g, p)
        assert n == len(items), p
        assert rows == _msgspec(mini_sensors, p)
    assert rows[1][1] == (NOW // 1000) * 1000  # epoch seconds are made milliseconds
    assert rows[2][2] == (-0.0).hex() and rows[3][2] == (0.1).hex()


@pytest.mark.parametrize("item", [
    '{"sensor":"RG-\\u0041","ts":1764300000000,"value":1}',  # an escape: msgspec decides
    '{"sensor":"RG-B1","ts":1764300000000,"value":1}',  # registered, but outside the gateway's street
    '{"sensor":"XX-1","ts":1764300000000,"value":1}',  # not registered
    '{"sensor":"RG-A1","ts":1764300000000,"value":1234567890123456}',  # 16 digits: past exact
    '{"sensor":"RG-A1","ts":1764300000000,"value":1e23}',  # a power of ten past exact
    '{"sensor":"RG-A1","ts":1764300000000,"value":5e-324}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":1e999}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":01}',  # not JSON
    '{"sensor":"RG-A1","ts":1764300000000,"value":1.}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":.5}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":+1}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":-}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":"1"}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":true}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":null}',
    '{"sensor":"RG-A1","ts":1764300000000.0,"value":1}',
    '{"sensor":"RG-A1","ts":1e12,"value":1}',
    '{"sensor":"RG-A1","ts":0,"value":1}',
    '{"sensor":"RG-A1","ts":-1,"value":1}',
    '{"sensor":"RG-A1","ts":4611686018427387904,"value":1}',  # 2**62
    '{"sensor":"RG-A1","ts":1764300000000}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":1,"unit":"mm"}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":1,"value":2}',
    '{"sensor":"RG-A1","sensor":"RG-A2","ts":1764300000000,"value":1}',
    '{"sensor":"RG-A1","ts":1764300000000,"value":1,}',
    '["RG-A1",1764300000000,1]',
])
def test_anything_else_is_left_to_msgspec(mini_sensors: SensorRegistry, item: str) -> None:
    g = _scanner(mini_sensors)
    good = '{"sensor":"RG-A2","ts":1764300000000,"value":2}'
    for p in (f'{{"readings":[{good},{item}]}}', f'[{item}]', f'[{good}, {item}]'):
        assert _scan(g, p.encode())[0] == -1, p


@pytest.mark.parametrize("payload", [
    b'', b'[]', b'{"readings":[]}', b'{"readings":[{"sensor":"RG-A1","ts":1764300000000,"value":1}]',
    b'{"readings":[{"sensor":"RG-A1","ts":1764300000000,"value":1}]}x',
    b'[{"sensor":"RG-A1","ts":1764300000000,"value":1}',
    b'{"readings":[{"sensor":"RG-A1","ts":1764300000000,"value":1}],"gateway":"GW-1"}',
    b'{"data":[{"sensor":"RG-A1","ts":1764300000000,"value":1}]}', b'{"readings":{"sensor":"RG-A1"}}',
    b'{"readings":[{"sensor":"RG-A1","ts":1764300000000,"value":1}]}{"readings":[]}', b'{', b'[', b'"RG-A1"',
    b'[{"sensor":"RG-A1","ts":1764300000000,"value":1}][{"sensor":"RG-A1","ts":1764300000000,"value":1}]',
])
def test_shapes_other_than_a_batch_are_left_alone(mini_sensors: SensorRegistry, payload: bytes) -> None:
    assert _scan(_scanner(mini_sensors), payload)[0] == -1


def test_each_payload_is_read_within_its_own_bytes(mini_sensors: SensorRegistry) -> None:
    """The batch's payloads are scanned from one joined buffer; a payload cut short must not be
    completed by its neighbour's bytes, which would move readings onto another message."""
    g = _scanner(mini_sensors)
    where = g.region(DISTRICT)
    whole = orjson.dumps({"readings": [{"sensor": "RG-A1", "ts": NOW, "value": 1.5},
                                       {"sensor": "RG-B1", "ts": NOW, "value": 2.5}]})
    for cut in range(1, len(whole)):
        counts, s, _, _ = g.scan([whole[:cut], whole[cut:], whole], [where] * 3)  # type: ignore[list-item]
        assert counts == [-1, -1, 2] and s.shape[0] == 2, cut


def test_a_region_prefix_counts_whole_codes(mini_sensors: SensorRegistry) -> None:
    g = _scanner(mini_sensors)
    p = orjson.dumps([{"sensor": "RG-A1", "ts": NOW, "value": 1}, {"sensor": "RG-B1", "ts": NOW, "value": 1}])
    assert _scan(g, p, DISTRICT)[0] == 2
    assert _scan(g, p, STREET_A)[0] == -1 and _scan(g, p, STREET_B)[0] == -1
    assert _scan(g, p[:1] + p[p.index(b"},") + 2:], STREET_B)[0] == 1
    assert g.region("44010") is None and g.region("44010600100a") is None and g.region("４４０１０６") is None


def _payload(rng: random.Random, ids: list[str]) -> bytes:
    items = []
    for _ in range(rng.randint(1, 8)):
        ts = (NOW - rng.randrange(10**8) if rng.random() < 0.92 else
              rng.choice([NOW // 1000, 1, 0, -5, 2**62 - 1, 2**62, 10**18, 1.5, "2020", 99_999_999_999, True]))
        v = (round(rng.uniform(-1e3, 1e4), rng.randint(0, 6)) if rng.random() < 0.88 else
             rng.choice([0, -0.0, 1e22, 1e23, 1e-22, 5e-324, 0.1 + 0.2, 123456789012345.6, 2**53 + 1, 1e308,
                         -7, rng.random(), True, None, "1"]))
        d: dict[str, Any] = {"sensor": rng.choice(ids) if rng.random() < 0.95 else rng.choice(["", "X", "RG-A1 "]),
                             "ts": ts, "value": v}
        if rng.random() < 0.05:
            d["battery"] = 3.3
        if rng.random() < 0.05:
            del d[rng.choice(list(d))]
        keys = list(d)
        if rng.random() < 0.3:
            rng.shuffle(keys)
        items.append({k: d[k] for k in keys})
    doc: Any = {"readings": items} if rng.random() < 0.7 else items
    if rng.random() < 0.5:
        p = orjson.dumps(doc)
    else:
        p = json.dumps(doc, indent=rng.choice([None, 1, "\t"]), ensure_ascii=rng.random() < 0.5,
                       separators=rng.choice([(", ", ": "), (",", ":"), (" , ", " : ")])).encode()
    if rng.random() < 0.3:
        b = bytearray(p)
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(b) + 1)
            op = rng.random()
            if op < 0.3 and k < len(b):
                b[k] = rng.randrange(256)
            elif op < 0.6:
                b[k:k] = rng.choice([b" ", b"\n", b"0", b"-", b".", b"e", b",", b"]", b"}", b"{", b'"', b"\\", b"\xff"])
            elif k < len(b):
                del b[k]
        p = bytes(b)
    return p


@pytest.mark.parametrize("seed", [1, 2])
def test_mutated_batches_read_as_msgspec_reads_them(mini_sensors: SensorRegistry, seed: int) -> None:
    rng = random.Random(seed)
    g = _scanner(mini_sensors)
    inside = {p: [s.id for s in mini_sensors.sensors if s.community.startswith(p) or rng.random() < 0.1]
              for p in (DISTRICT, STREET_A, STREET_B, COMM_A1)}
    taken = left = passed = 0
    for _ in range(40):
        prefixes = [rng.choice(list(inside)) for _ in range(250)]
        payloads = [_payload(rng, inside[p]) for p in prefixes]
        counts, s, t, v = g.scan(payloads, [g.region(p) for p in prefixes])  # type: ignore[misc]
        a = 0
        for p, prefix, c in zip(payloads, prefixes, counts, strict=True):
            want = _msgspec(mini_sensors, p, prefix)
            if c < 0:
                left += 1
                passed += want is not None
                continue
            taken += 1
            got = list(zip(s[a:a + c].tolist(), t[a:a + c].tolist(), [x.hex() for x in v[a:a + c].tolist()],
                           strict=True))
            a += c
            assert got == want, p
        assert a == s.shape[0]
    # both ways are exercised, and most of what msgspec reads the scanner reads too (it leaves
    # values of 16 digits or more, and times of 19, to msgspec)
    assert taken > 1_500 and left > 5_000 and passed < taken / 2


FORCED = os.environ.get("NUMBA_BOUNDSCHECK") == "1"


def test_the_unchecked_path_stays_inside_its_arrays(tmp_path: Path) -> None:
    """The compact path is compiled without numba's bounds check (it checks its indices
    itself): the fuzz tests run again in a process of their own with the check forced on
    everywhere and freshly compiled, where any access outside an array raises IndexError, and
    a canary shows the check really is on there."""
    if FORCED:
        pytest.skip("this is that process")
    here = Path(__file__)
    tests = [f"{here}::{name}" for name in ("test_bounds_are_checked_when_forced",
                                            "test_mutated_batches_read_as_msgspec_reads_them",
                                            "test_each_payload_is_read_within_its_own_bytes",
                                            "test_common_forms_are_read_exactly")]
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], env=env,
                         cwd=here.parent.parent, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "5 passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-3000:]


@pytest.mark.skipif(not FORCED, reason="run by test_the_unchecked_path_stays_inside_its_arrays")
def test_bounds_are_checked_when_forced() -> None:
    short = np.frombuffer(b"abc", np.uint8)
    with pytest.raises(IndexError):  # an end past the buffer: the guard trusts it, the forced check does not
        gatewayscan._lit(short, 0, 10, np.frombuffer(b"abcdef", np.uint8))


def _without_scanner(proc: MessageProcessor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "_scan", lambda js, payloads, where: None)


def _scanned_messages(proc: MessageProcessor, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The indices (within their batch) of the messages the scanner takes, as it takes them."""
    taken: list[int] = []
    original = proc._scan

    def counting(js: Any, payloads: Any, where: Any) -> Any:
        out = original(js, payloads, where)
        taken.extend(out[0] if out is not None else ())
        return out

    monkeypatch.setattr(proc, "_scan", counting)
    return taken


def _same(a: Outcome, b: Outcome) -> None:
    for x, y in ((a.sensor, b.sensor), (a.ts_ms, b.ts_ms), (a.value, b.value), (a.evaluate, b.evaluate)):
        assert x.tolist() == y.tolist()
    assert [(r.reason, r.detail, r.topic, r.index, r.payload) for r in a.rejections] == \
        [(r.reason, r.detail, r.topic, r.index, r.payload) for r in b.rejections]


def test_outcome_is_the_same_with_and_without_the_scanner(
        mini_sensors: SensorRegistry, mini_regions: RegionRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows in message order, interleaved with per-sensor messages and with batches the scanner
    leaves alone; a reading out of range or from the future inside a scanned batch is rejected
    with its own index and its message's payload."""
    rng = random.Random(7)
    ids = [s.id for s in mini_sensors.sensors]
    topics = [GW_A, f"ews/{DISTRICT}/batch/GW-2", f"ews/{DISTRICT}/{STREET_B}/batch/GW-3"]
    single = f"ews/{DISTRICT}/{STREET_A}/{COMM_A1}/rain/RG-A1"
    batches = []
    for _ in range(12):
        msgs: list[tuple[str, bytes]] = []
        for _ in range(60):
            r = rng.random()
            if r < 0.2:
                one = {"ts": NOW - rng.randrange(10**7), "value": rng.choice([1.0, 2, -3])}
                msgs.append((single, orjson.dumps(one)))
            elif r < 0.6:
                items = [{"sensor": rng.choice(ids), "ts": rng.choice([NOW - rng.randrange(10**7), NOW + 10**7]),
                          "value": rng.choice([0.5, 3.0, 1e5, -1.0, 12.25])} for _ in range(rng.randint(1, 6))]
                msgs.append((rng.choice(topics), orjson.dumps({"readings": items})))
            else:
                msgs.append((rng.choice(topics), _payload(rng, ids)))
        batches.append(msgs)
    fast, slow = MessageProcessor(mini_sensors, mini_regions), MessageProcessor(mini_sensors, mini_regions)
    _without_scanner(slow, monkeypatch)
    scanned = _scanned_messages(fast, monkeypatch)
    reasons = set()
    for msgs in batches:
        a, b = fast.process(msgs, now_ms=NOW), slow.process(msgs, now_ms=NOW)
        _same(a, b)
        reasons |= {r.reason for r in a.rejections}
    assert len(scanned) > 100
    assert {"out_of_range", "future_timestamp", "region_mismatch"} <= {str(r) for r in reasons}


def test_a_gateway_first_seen_is_scanned_from_its_first_message(
        mini_sensors: SensorRegistry, mini_regions: RegionRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start with a backlog: every gateway is new in the first batch. Its plain batches are
    read by the scanner from the first one on, with the outcome the general path gives; a
    batch the scanner leaves alone still goes the general way."""
    topics = {GW_A: "RG-A1", f"ews/{DISTRICT}/batch/GW-2": "RG-B1", f"ews/{DISTRICT}/{STREET_B}/batch/GW-3": "RG-B1"}
    plain = [(topic, orjson.dumps({"readings": [{"sensor": sensor, "ts": NOW - 60_000 * k, "value": k},
                                                {"sensor": sensor, "ts": NOW - 60_000 * k - 1, "value": 0.5}]}))
             for k in range(3) for topic, sensor in topics.items()]
    odd = (GW_A, orjson.dumps([{"sensor": "RG-A1", "ts": NOW, "value": 0.30000000000000004}]))
    msgs = [*plain[:4], odd, *plain[4:]]
    fast, slow = MessageProcessor(mini_sensors, mini_regions), MessageProcessor(mini_sensors, mini_regions)
    _without_scanner(slow, monkeypatch)
    taken = _scanned_messages(fast, monkeypatch)
    a, b = fast.process(msgs, now_ms=NOW), slow.process(msgs, now_ms=NOW)
    _same(a, b)
    assert sorted(taken) == [k for k in range(len(msgs)) if k != 4]  # all but the odd one
    assert len(a) == 2 * len(plain) + 1 and a.rejections == []


def test_a_fault_in_the_scanner_costs_speed_not_readings(
        mini_sensors: SensorRegistry, mini_regions: RegionRegistry, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    proc = MessageProcessor(mini_sensors, mini_regions)
    msgs = [(GW_A, orjson.dumps([{"sensor": "RG-A1", "ts": NOW - k, "value": k} for k in range(1, 4)]))] * 2
    before = proc.process(msgs, now_ms=NOW)

    def broken(payloads: Any, regions: Any) -> Any:
        raise IndexError("index 99 is out of bounds for axis 0 with size 98")

    monkeypatch.setattr(proc._scanner, "scan", broken)
    with caplog.at_level(logging.ERROR, "ingest.process"):
        after = proc.process(msgs, now_ms=NOW)
    _same(before, after)
    assert len(after) == 6 and "gateway scanner failed" in caplog.text


def test_compiled_code_works_where_nothing_may_be_cached(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """numba raises when a cached function is defined and no cache folder is writable (a
    read-only install, a user without a home): the pipeline must still import and run."""
    import numba.core.caching

    from ews import compiled

    monkeypatch.setattr(numba.core.caching.CacheImpl, "_locator_classes", [])
    monkeypatch.setattr(compiled, "_said", [False])
    with pytest.raises(RuntimeError, match="no locator available"):  # what numba itself does
        numba.njit(cache=True)(lambda x: x + 1)
    with caplog.at_level(logging.WARNING, "ews.compiled"):
        twice = compiled.kernel(lambda a: a * 2)
        assert twice(np.arange(3)).tolist() == [0, 2, 4]
    assert "compiled at every start" in caplog.text and "NUMBA_CACHE_DIR" in caplog.text


def test_copy_bytes_copies_the_run_and_checks_both_ranges() -> None:
    from ews.compiled import copy_bytes

    src = np.frombuffer(b"0123456789", np.uint8)  # read-only, as orjson's output is
    dst = np.zeros(8, np.uint8)
    copy_bytes(dst, 2, src, 5, 4)
    assert dst.tobytes() == b"\0\x005678\0\0"
    copy_bytes(dst, 0, src, 0, 0)  # an empty run is no copy
    copy_bytes(dst, 6, src, 8, 2)  # up to the last byte of both
    assert dst.tobytes() == b"\0\x00567889"
    for at, start, count in [(5, 0, 4), (0, 7, 4), (0, 0, -1), (-1, 0, 1), (0, -1, 1), (8, 0, 1)]:
        with pytest.raises(IndexError):
            copy_bytes(dst, at, src, start, count)
    assert dst.tobytes() == b"\0\x00567889"  # a refused copy writes nothing


def test_line_protocol_into_too_small_a_buffer_raises(mini_sensors: SensorRegistry) -> None:
    """The lines are laid out by address: a buffer sized wrong must stop the copy, never write
    past its end."""
    from ingest.lineproto import _interleave, _json

    b = LineBuilder(mini_sensors)
    sensor = np.array([0, 1, 0], np.int64)
    values, times = _json(np.array([1.5, 2.25, 3.0])), _json(np.array([NOW, NOW, NOW + 1]))
    need = int(b._plen[sensor].sum()) + values.shape[0] + times.shape[0] + 2 * 3
    out = np.zeros(need + 16, np.uint8)
    k = _interleave(sensor, values, times, b._pbuf, b._poffs, out)
    assert out[:k].tobytes() == b.build(sensor, np.array([NOW, NOW, NOW + 1]), np.array([1.5, 2.25, 3.0]))
    guard = np.full(need + 16, 7, np.uint8)
    for size in (k - 1, k - 20, 10):
        guard[:] = 7
        with pytest.raises(IndexError):
            _interleave(sensor, values, times, b._pbuf, b._poffs, guard[:size])
        assert (guard[size:] == 7).all()  # nothing written past the end


def test_line_protocol_is_each_reading_formatted_alone(mini_sensors: SensorRegistry) -> None:
    rng = np.random.default_rng(3)
    n = 2_000
    sensor = rng.integers(0, len(mini_sensors), n)
    ts = NOW + rng.integers(-10**9, 10**9, n)
    value = np.concatenate([rng.normal(0, 1e3, n - 8), [0.0, -0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308,
                                                        0.1, 123456789.123]])
    b = LineBuilder(mini_sensors)
    want = "".join(f"{b.tags[s]} value={orjson.dumps(float(v)).decode()} {t}\n"
                   for s, t, v in zip(sensor.tolist(), ts.tolist(), value.tolist(), strict=True)).encode()
    assert b.build(sensor, ts, value) == want
    every_other = want.splitlines(keepends=True)[::2]  # strided arrays, as a filtered batch may hand over
    assert b.build(sensor[::2], ts[::2], value[::2]) == b"".join(every_other)
