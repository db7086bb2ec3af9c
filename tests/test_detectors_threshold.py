"""Threshold with hysteresis and hold: hand-checked edges and a plain-loop reference."""

from __future__ import annotations

import math
import random

import numpy as np

from detectors.threshold import ThresholdDetector

NAN = float("nan")
MIN = 60_000


def feed(det: ThresholdDetector, series: list[tuple[int, float]], row: int = 0) -> list[int]:
    out = []
    for t, v in series:
        lv = det.update(np.array([row]), np.array([t], np.int64), np.array([v]))
        out.append(int(lv[0]))
    return out


def reference(
    series: list[tuple[int, float]], enter: list[float], hyst: list[float],
    hold_in: int, hold_out: int,
) -> list[int]:
    """The documented semantics, one level at a time, with plain Python."""
    n = len(enter)
    active = [False] * n
    up_since: list[int | None] = [None] * n
    down_since: list[int | None] = [None] * n
    levels = []
    for t, v in series:
        for i in range(n):
            if math.isnan(enter[i]):
                active[i] = False
                continue
            is_above = not math.isnan(v) and v >= enter[i]
            is_below = not math.isnan(v) and v < enter[i] - hyst[i]
            if is_above:
                if up_since[i] is None:
                    up_since[i] = t
            else:
                up_since[i] = None
            if is_below:
                if down_since[i] is None:
                    down_since[i] = t
            else:
                down_since[i] = None
            up, down = up_since[i], down_since[i]
            if up is not None and t - up >= hold_in:
                active[i] = True
            if down is not None and t - down >= hold_out:
                active[i] = False
        on = [i + 1 for i in range(n) if active[i]]
        levels.append(max(on) if on else 0)
    return levels


def test_exactly_at_threshold_enters() -> None:
    det = ThresholdDetector(np.array([[10.0, 20.0, 30.0, 40.0]]))
    assert feed(det, [(0, 9.999), (1, 10.0), (2, 20.0), (3, 39.99), (4, 40.0)]) == [0, 1, 2, 3, 4]


def test_hysteresis_band_keeps_state() -> None:
    det = ThresholdDetector(np.array([[10.0, 20.0, NAN, NAN]]), hysteresis=1.0)
    # 19.5 and 19.0 lie in yellow's band [19, 20): yellow stays; 18.9 leaves it
    got = feed(det, [(0, 20.0), (1, 19.5), (2, 19.0), (3, 18.9), (4, 9.5), (5, 8.99)])
    assert got == [2, 2, 2, 1, 1, 0]
    # rising through the band does not enter
    det2 = ThresholdDetector(np.array([[10.0, NAN, NAN, NAN]]), hysteresis=1.0)
    assert feed(det2, [(0, 9.5), (1, 9.99), (2, 10.0)]) == [0, 0, 1]


def test_absent_levels_are_skipped() -> None:
    # Guangdong style: no blue
    det = ThresholdDetector(np.array([[NAN, 50.0, 80.0, 100.0]]))
    assert feed(det, [(0, 49.0), (1, 50.0), (2, 100.0), (3, 0.0)]) == [0, 2, 4, 0]


def test_hold_on_entry_and_exit() -> None:
    det = ThresholdDetector(np.array([[10.0, NAN, NAN, NAN]]), hold_enter_ms=10 * MIN,
                            hold_exit_ms=5 * MIN)
    series = [
        (0, 12.0),          # above: entry hold starts
        (5 * MIN, 11.0),    # 5 min: not yet
        (10 * MIN, 10.0),   # 10 min above: enters (exactly at hold)
        (12 * MIN, 3.0),    # below: exit hold starts
        (15 * MIN, 11.0),   # above again: exit hold restarts
        (16 * MIN, 2.0),    # below from 16 min
        (20 * MIN, 2.0),    # 4 min: still active
        (21 * MIN, 2.0),    # 5 min: leaves
    ]
    assert feed(det, series) == [0, 0, 1, 1, 1, 1, 1, 0]


def test_dip_restarts_entry_hold_and_gap_counts_as_held() -> None:
    det = ThresholdDetector(np.array([[10.0, NAN, NAN, NAN]]), hold_enter_ms=10 * MIN)
    series = [(0, 12.0), (6 * MIN, 5.0), (7 * MIN, 12.0), (16 * MIN, 12.0), (17 * MIN, 12.0)]
    assert feed(det, series) == [0, 0, 0, 0, 1]
    # a gap with no readings between two readings above counts as time above
    det2 = ThresholdDetector(np.array([[10.0, NAN, NAN, NAN]]), hold_enter_ms=10 * MIN)
    assert feed(det2, [(0, 12.0), (120 * MIN, 12.0)]) == [0, 1]


def test_duplicate_reading_is_idempotent() -> None:
    det = ThresholdDetector(np.array([[10.0, NAN, NAN, NAN]]), hold_enter_ms=MIN)
    assert feed(det, [(0, 11.0), (0, 11.0), (MIN, 11.0), (MIN, 11.0)]) == [0, 0, 1, 1]


def test_per_subject_thresholds() -> None:
    enter = np.array([[4.7, 5.0, 6.0, 7.0], [9.7, 10.0, 11.0, 12.0]])
    det = ThresholdDetector(enter)
    lv = det.update(np.array([0, 1]), np.array([0, 0], np.int64), np.array([6.5, 6.5]))
    assert lv.tolist() == [3, 0]
    lv = det.update(np.array([1]), np.array([1], np.int64), np.array([10.2]))
    assert lv.tolist() == [2]
    assert det.levels().tolist() == [3, 2]


def test_random_series_match_reference_vectorised_over_subjects() -> None:
    rng = random.Random(7)
    n_subj, n_steps = 25, 120
    enters, hysts, series = [], [], []
    for _ in range(n_subj):
        base = sorted(rng.sample(range(5, 60), 4))
        e = [float(b) for b in base]
        if rng.random() < 0.3:
            e[0] = NAN
        enters.append(e)
        hysts.append([rng.choice([0.0, 1.0, 2.5]) for _ in range(4)])
        t, s = 0, []
        for _ in range(n_steps):
            t += rng.choice([MIN, 2 * MIN, 5 * MIN, 30 * MIN])
            s.append((t, float(rng.choice(range(0, 70)))))
        series.append(s)
    hold_in, hold_out = 6 * MIN, 4 * MIN
    det = ThresholdDetector(np.array(enters), np.array(hysts), hold_in, hold_out)
    got: list[list[int]] = [[] for _ in range(n_subj)]
    for step in range(n_steps):
        rows = np.array([i for i in range(n_subj) if rng.random() < 0.95 or step == 0])
        # every subject still gets every reading, only in rounds of different membership
        for i in range(n_subj):
            if i not in rows:
                lv = det.update(np.array([i]), np.array([series[i][step][0]], np.int64),
                                np.array([series[i][step][1]]))
                got[i].append(int(lv[0]))
        lv = det.update(rows, np.array([series[i][step][0] for i in rows], np.int64),
                        np.array([series[i][step][1] for i in rows]))
        for i, level in zip(rows, lv, strict=True):
            got[int(i)].append(int(level))
    for i in range(n_subj):
        assert got[i] == reference(series[i], enters[i], hysts[i], hold_in, hold_out), i
