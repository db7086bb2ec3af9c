"""Ring-buffer windows and rolling sums against plain Python sums over the same readings."""

from __future__ import annotations

import random

import numpy as np

from detectors.accumulate import Accumulator, rolling_sums
from detectors.windows import APPENDED, IGNORED, LATE, REPLACED_NEWEST, Windows, capacity_for

H = 3_600_000
M5 = 300_000
SPANS = np.array([1 * H, 3 * H, 6 * H, 12 * H, 24 * H], np.int64)


def plain_sum(readings: dict[int, float], t: int, span: int) -> float:
    return sum(v for ts, v in readings.items() if t - span < ts <= t)


def insert_one(w: Windows, row: int, t: int, v: float) -> int:
    return int(w.insert(np.array([row]), np.array([t], np.int64), np.array([v]))[0])


def test_capacity_has_margin() -> None:
    assert capacity_for(24 * H, M5) >= 24 * 12
    assert capacity_for(3 * H, M5) < capacity_for(24 * H, M5)


def test_sums_match_plain_loops_with_gaps_over_many_sensors() -> None:
    rng = random.Random(3)
    n = 12
    w = Windows(n, capacity_for(24 * H, M5), 24 * H)
    stored: list[dict[int, float]] = [{} for _ in range(n)]
    clocks = [1_700_000_000_000 + rng.randrange(0, M5) for _ in range(n)]
    for _ in range(400):
        rows = np.array(sorted(rng.sample(range(n), rng.randint(1, n))))
        ts, vals = [], []
        for r in rows:
            # mostly every 5 min, sometimes a gap of hours
            clocks[r] += M5 if rng.random() < 0.9 else rng.choice([2 * H, 7 * H, 30 * H])
            ts.append(clocks[r])
            vals.append(rng.choice([0.0, 0.0, 0.5, 1.0, 2.5, 10.0]))
        out = w.insert(rows, np.array(ts, np.int64), np.array(vals))
        assert (out == APPENDED).all()
        for r, t, v in zip(rows, ts, vals, strict=True):
            stored[r][t] = v
        sums = rolling_sums(w, rows, np.array(ts, np.int64), SPANS)
        for k, (r, t) in enumerate(zip(rows, ts, strict=True)):
            expected = [plain_sum(stored[r], t, int(s)) for s in SPANS]
            assert sums[k].tolist() == expected


def test_window_boundary_is_open_below_closed_above() -> None:
    w = Windows(1, 64, 6 * H)
    for i in range(7):  # readings at 0, 1h, ..., 6h, each 1 mm
        insert_one(w, 0, i * H, 1.0)
    s = rolling_sums(w, np.array([0]), np.array([6 * H], np.int64), np.array([3 * H, 6 * H]))
    # (3h, 6h] holds 4h, 5h, 6h; (0, 6h] holds 1h..6h
    assert s.tolist() == [[3.0, 6.0]]


def test_duplicate_replaces_and_redelivery_changes_nothing() -> None:
    w = Windows(1, 32, 3 * H)
    assert insert_one(w, 0, 0, 2.0) == APPENDED
    assert insert_one(w, 0, M5, 3.0) == APPENDED
    before = rolling_sums(w, np.array([0]), np.array([M5], np.int64), np.array([H]))
    assert insert_one(w, 0, M5, 3.0) == REPLACED_NEWEST
    again = rolling_sums(w, np.array([0]), np.array([M5], np.int64), np.array([H]))
    assert before.tolist() == again.tolist() == [[5.0]]
    assert insert_one(w, 0, M5, 4.0) == REPLACED_NEWEST  # a corrected value replaces
    assert insert_one(w, 0, 0, 1.5) == LATE  # same ts as an older reading replaces it too
    assert w.last(0, 10) == [(0, 1.5), (M5, 4.0)]
    s = rolling_sums(w, np.array([0]), np.array([M5], np.int64), np.array([H]))
    assert s.tolist() == [[5.5]]


def test_out_of_order_inside_window_is_inserted_in_place() -> None:
    rng = random.Random(11)
    times = [i * M5 for i in range(60)]
    values = {t: rng.choice([0.5, 1.0, 2.0, 4.5]) for t in times}
    order = times[:]
    rng.shuffle(order)
    w = Windows(1, 128, 24 * H)
    for t in order:
        insert_one(w, 0, t, values[t])
    assert w.last(0, 200) == sorted(values.items())
    for t in times:
        s = rolling_sums(w, np.array([0]), np.array([t], np.int64), SPANS[:3])
        assert s[0].tolist() == [plain_sum(values, t, int(x)) for x in SPANS[:3]]


def test_late_insert_sums_equal_in_order_sums() -> None:
    in_order = Windows(1, 64, 12 * H)
    late = Windows(1, 64, 12 * H)
    times = [i * M5 for i in range(20)]
    vals = [0.1 * (i % 7) for i in range(20)]
    for t, v in zip(times, vals, strict=True):
        insert_one(in_order, 0, t, v)
    for t, v in zip(times, vals, strict=True):
        if t != times[5]:
            insert_one(late, 0, t, v)
    assert insert_one(late, 0, times[5], vals[5]) == LATE
    assert np.array_equal(in_order.before, late.before)
    assert np.array_equal(in_order.value, late.value)


def test_older_than_window_is_ignored() -> None:
    w = Windows(1, 64, 3 * H)
    insert_one(w, 0, 10 * H, 1.0)
    assert insert_one(w, 0, 7 * H, 5.0) == IGNORED  # exactly span older: outside (t - W, t]
    assert insert_one(w, 0, 7 * H + 1, 5.0) == LATE
    assert w.last(0, 5) == [(7 * H + 1, 5.0), (10 * H, 1.0)]


def test_full_ring_drops_oldest_and_ignores_older() -> None:
    w = Windows(1, 4, 24 * H)
    for i in range(6):
        insert_one(w, 0, i * M5, float(i + 1))
    assert w.last(0, 10) == [(2 * M5, 3.0), (3 * M5, 4.0), (4 * M5, 5.0), (5 * M5, 6.0)]
    assert insert_one(w, 0, M5, 100.0) == IGNORED
    assert insert_one(w, 0, 3 * M5 + 1, 0.5) == LATE  # in place; the oldest falls out
    assert w.last(0, 10) == [(3 * M5, 4.0), (3 * M5 + 1, 0.5), (4 * M5, 5.0), (5 * M5, 6.0)]
    s = rolling_sums(w, np.array([0]), np.array([5 * M5], np.int64), np.array([H]))
    assert s.tolist() == [[4.0 + 0.5 + 5.0 + 6.0]]


def test_empty_rows_sum_to_zero() -> None:
    w = Windows(3, 8, H)
    insert_one(w, 1, 0, 2.0)
    s = rolling_sums(w, np.array([0, 1, 2]), np.array([0, 0, 0], np.int64), np.array([H]))
    assert s.tolist() == [[0.0], [2.0], [0.0]]


def test_accumulator_at_newest_matches_plain_loops_with_late_readings_and_gaps() -> None:
    rng = random.Random(23)
    n = 8
    w = Windows(n, capacity_for(12 * H, M5), 12 * H)
    acc = Accumulator(w, SPANS[:4])
    stored: list[dict[int, float]] = [{} for _ in range(n)]
    clocks = [0] * n
    for _ in range(600):
        rows = np.array(sorted(rng.sample(range(n), rng.randint(1, n))))
        ts, vals = [], []
        for r in rows:
            roll = rng.random()
            if roll < 0.1 and stored[r]:
                t = clocks[r] - rng.randrange(1, 3 * H)  # late, inside the 12 h span
            elif roll < 0.15 and stored[r]:
                t = clocks[r]  # redelivered newest
            else:
                clocks[r] += M5 if roll < 0.9 else rng.choice([2 * H, 5 * H, 13 * H])
                t = clocks[r]
            ts.append(t)
            vals.append(stored[r].get(t, rng.choice([0.0, 0.5, 1.0, 3.5])))
        w.insert(rows, np.array(ts, np.int64), np.array(vals))
        for r, t, v in zip(rows, ts, vals, strict=True):
            if t > clocks[r] - 12 * H:
                stored[r][t] = v
        sums = acc.sums_at_newest(rows)
        for k, r in enumerate(rows):
            newest = clocks[r]
            expected = [plain_sum(stored[r], newest, int(s)) for s in SPANS[:4]]
            assert sums[k].tolist() == expected
