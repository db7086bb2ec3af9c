"""The detectors' compiled kernels give exactly what their whole-array numpy forms give
(detectors/reference.py), and what the reading-by-reading detectors give, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import reference
from detectors.accumulate import _first_after, _rolling_sums, first_after, rolling_sums
from detectors.faults import Drift, Stuck, _drift_means, _stuck_runs
from detectors.threshold import ThresholdDetector, _quiet_since
from detectors.trend import _fit_rows, _pairwise_sum, slopes
from detectors.windows import NO_TS, TS, Windows, previous

T0 = 1_782_000_000_000


def filled_windows(rng: np.random.Generator, n: int, capacity: int) -> Windows:
    """Rows holding from nothing to more than a full ring (so positions wrap), with readings
    appended, repeated and inserted late, at ms steps from the same instant to an hour."""
    win = Windows(n, capacity, 10**12)
    newest = np.full(n, T0, np.int64)
    for _ in range(int(rng.integers(0, 3 * capacity))):
        rows = rng.permutation(n)[: int(rng.integers(1, n + 1))]
        step = rng.choice([0, 1, 1000, 60_000, 3_600_000], size=rows.shape[0])
        late = rng.random(rows.shape[0]) < 0.1
        ts = np.where(late, newest[rows] - rng.integers(1, 300_000, rows.shape[0]), newest[rows] + step)
        win.insert(rows, ts, rng.random(rows.shape[0]))
        newest[rows] = np.maximum(newest[rows], ts)
    return win


def logical_ts(win: Windows, r: int) -> np.ndarray:
    pos = np.arange(win.end[r] - win.count[r], win.end[r])
    return win.data[(pos & win.mask) * win.n + r, TS]


@pytest.mark.parametrize("seed", range(6))
def test_first_after_is_the_search_it_replaced_and_what_it_says(seed: int) -> None:
    rng = np.random.default_rng(seed)
    win = filled_windows(rng, int(rng.integers(1, 40)), int(rng.choice([1, 2, 8, 64])))
    for shape in [(0,), (1,), (25,), (25, 1), (25, 3), (7, 2, 3)]:
        rows = rng.integers(0, win.n, shape[0])
        stored = np.concatenate([logical_ts(win, int(r)) for r in range(win.n)] + [np.array([T0], float)])
        # stored times, a ms either side of them, and far outside
        x = rng.choice(stored, size=shape).astype(np.int64) + rng.choice([-1, 0, 0, 1, -10**9, 10**9], size=shape)
        got = first_after(win, rows, x)
        assert got.shape == shape and got.dtype == np.int64
        flat = x.reshape(shape[0], int(np.prod(shape[1:])))
        want = reference.first_after(win.data.reshape(-1), win.end, win.count, win.mask, win.n, rows, flat)
        assert np.array_equal(got.reshape(flat.shape), want)
        for i, r in enumerate(rows):  # what it says: the first held reading after x, by position
            held = logical_ts(win, int(r))
            first = win.end[r] - win.count[r]
            assert [first + int(np.searchsorted(held, float(v), side="right")) for v in flat[i]] == list(
                got.reshape(flat.shape)[i])


def test_first_after_never_reads_outside_the_ring() -> None:
    win = Windows(2, 4, 10**9)
    win.insert(np.array([0, 1]), np.array([T0, T0]), np.array([1.0, 2.0]))
    win.end[1] = 99  # a corrupted row: positions past what the buffer holds are refused
    win.count[1] = 99
    with pytest.raises(IndexError):
        _first_after(win.data.reshape(-1), win.end, win.count, win.mask, 10**6, np.array([1]),
                     np.array([[T0]]))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal to the last bit, NaN where NaN, and -0.0 where -0.0."""
    return a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


def times_near(rng: np.random.Generator, win: Windows, k: int) -> np.ndarray:
    """Stored times of the ring, a ms either side of them, and far outside."""
    stored = np.concatenate([logical_ts(win, int(r)) for r in range(win.n)] + [np.array([T0], float)])
    return rng.choice(stored, size=k).astype(np.int64) + rng.choice([-1, 0, 0, 1, -10**9, 10**9], size=k)


@pytest.mark.parametrize("seed", range(4))
def test_rolling_sums_are_the_whole_array_form(seed: int) -> None:
    rng = np.random.default_rng(700 + seed)
    nonzero = 0
    for _ in range(60):
        win = filled_windows(rng, int(rng.integers(1, 30)), int(rng.choice([1, 2, 8, 64])))
        k = int(rng.integers(0, 40))
        rows = rng.integers(0, win.n, k)
        t = times_near(rng, win, k)
        spans = rng.choice([1, 1000, 60_000, 3_600_000, 86_400_000, 10**10], size=int(rng.integers(1, 5)))
        args = (win.data.reshape(-1), win.end, win.count, win.mask, win.n, rows, t, spans)
        got = _rolling_sums(*args)
        assert same_bits(got, reference.rolling_sums(*args))
        assert np.array_equal(rolling_sums(win, rows, t, spans), np.round(got, 6))
        nonzero += int((got != 0).sum())
    assert nonzero > 500  # windows held readings, not only empty stretches


def test_pairwise_sum_is_numpys_sum() -> None:
    """Bit for bit at every length up to several halvings deep, signed zeros included."""
    rng = np.random.default_rng(900)
    for n in [*range(0, 300), 511, 512, 1000, 1023, 1024, 1025, 4099, 20_000]:
        a = rng.standard_normal(n) * rng.choice([1e-6, 1.0, 1e9], size=n)
        a[rng.random(n) < 0.1] = -0.0
        assert same_bits(np.array(_pairwise_sum(a, n)), np.array(a.sum()))
    assert same_bits(np.array(_pairwise_sum(np.array([-0.0, -0.0]), 2)), np.array(0.0))


@pytest.mark.parametrize("seed", range(4))
def test_fit_rows_are_the_whole_array_form(seed: int) -> None:
    """Slot counts from one up to the ring's size, at most 200 (numpy sums eight lanes from
    eight on, and halves from 129), readings missing (NaN) and at -0.0, windows from nothing
    to everything, positions up to the end or up to a past reading."""
    rng = np.random.default_rng(800 + seed)
    fitted = 0
    for _ in range(60):
        win = filled_windows(rng, int(rng.integers(1, 30)), int(rng.choice([1, 8, 64, 256])))
        odd = rng.random(win.data.shape[0])
        win.data[odd < 0.05, 1] = np.nan
        win.data[(odd >= 0.05) & (odd < 0.1), 1] = -0.0
        k = int(rng.integers(0, 40))
        rows = rng.integers(0, win.n, k)
        t = times_near(rng, win, k)
        upto = win.end[rows] if rng.random() < 0.5 else first_after(win, rows, t)
        spans = rng.choice([1, 60_000, 1_800_000, 3_600_000, 10**10], size=int(rng.integers(1, 4)))
        m, least = int(rng.integers(1, min(win.capacity, 200) + 1)), int(rng.integers(1, 5))
        args = (win.data.reshape(-1), win.end, win.count, win.mask, win.n, rows, upto, t, spans, m, least)
        got, want = _fit_rows(*args), reference.fit_rows(*args)
        assert same_bits(got[0], want[0]) and same_bits(got[1], want[1])
        a, b = slopes(win, rows, t, spans, m, upto, least)
        assert np.array_equal(a, np.round(got[0], 9), equal_nan=True)
        assert np.array_equal(b, np.round(got[1], 9), equal_nan=True)
        fitted += int((~np.isnan(got[1])).sum())
    assert fitted > 100  # lines were fitted, not only refused


def stuck_case(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    k, m = int(rng.integers(1, 30)), int(rng.integers(1, 12))
    alphabet = np.array([0.0, -0.0, 1.5, 7.0, np.nan])
    v = rng.choice(alphabet, size=(k, m), p=[0.3, 0.1, 0.25, 0.25, 0.1])
    for c in range(1, m):  # runs: most readings repeat the one before
        again = rng.random(k) < 0.7
        v[again, c] = v[again, c - 1]
    t = T0 + np.cumsum(rng.choice([1, 60_000, 300_000, 900_000], size=(k, m)), axis=1)
    n = rng.integers(1, m + 1, k)
    ref = rng.choice(alphabet, size=k)
    since = np.where(rng.random(k) < 0.2, NO_TS, T0 - rng.integers(0, 3_600_000, k))
    count = rng.integers(0, 5, k)
    return ref, since, count, t, v, n


@pytest.mark.parametrize("seed", range(3))
def test_stuck_runs_are_what_the_whole_array_form_gives(seed: int) -> None:
    rng = np.random.default_rng(seed)
    decided = {True: 0, False: 0}
    for _ in range(400):
        ref, since, count, t, v, n = stuck_case(rng)
        ignore = [np.zeros(0), np.array([0.0]), np.array([7.0, 1.5])][int(rng.integers(3))]
        duration, least = int(rng.choice([0, 600_000, 1_800_000])), int(rng.integers(1, 5))
        a, b = (ref.copy(), since.copy(), count.copy()), (ref.copy(), since.copy(), count.copy())
        quiet = _stuck_runs(*a, t, v, n, ignore, duration, least)
        assert quiet == reference.stuck_runs(*b, t, v, n, ignore, duration, least)
        decided[quiet] += 1
        if quiet:
            for x, y in zip(a, b, strict=True):
                assert np.array_equal(x, y, equal_nan=True) and np.array_equal(np.signbit(x), np.signbit(y))
    assert min(decided.values()) > 40  # both answers were exercised


@pytest.mark.parametrize("seed", range(3))
def test_stuck_quiet_is_flags_reading_by_reading(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    decided = {True: 0, False: 0}
    for _ in range(150):
        ref, since, count, t, v, n = stuck_case(rng)
        k = v.shape[0]
        fast, slow = Stuck(np.zeros(k), 1_800_000, 3, ignore=[0.0]), Stuck(np.zeros(k), 1_800_000, 3, ignore=[0.0])
        for d in (fast, slow):
            d.ref[:], d.since[:], d.count[:] = ref, since, count
        s = np.arange(k)
        commit = fast.quiet(s, t, v, n)
        flagged = False
        for c in range(v.shape[1]):
            on = np.flatnonzero(n > c)
            flagged |= bool(slow.flags(s[on], t[on, c], v[on, c]).any())
        assert (commit is None) == flagged
        decided[flagged] += 1
        if commit is not None:
            commit()
            for name in ("ref", "since", "count"):
                assert np.array_equal(getattr(fast, name), getattr(slow, name), equal_nan=True)
    assert min(decided.values()) > 15


def drift_case(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    k, m = int(rng.integers(1, 30)), int(rng.integers(1, 40))
    mean = np.where(rng.random(k) < 0.2, np.nan, rng.random(k) * 3)
    last = np.where(rng.random(k) < 0.2, NO_TS, T0 - rng.integers(1, 3_600_000, k))
    next_check = np.where(rng.random(k) < 0.2, NO_TS, T0 + rng.integers(-3_600_000, 3_600_000, k))
    t = T0 + np.cumsum(rng.choice([1, 59_999, 300_000, 3_600_000], size=(k, m)), axis=1)
    v = np.round(rng.random((k, m)) * rng.choice([0.0, 0.2, 3.0], size=(k, 1)), 1)
    n = rng.integers(1, m + 1, k)
    return mean, last, next_check, t, v, n


def alpha_of(t: np.ndarray, last: np.ndarray, tau_ms: float) -> np.ndarray:
    prev = previous(t, last)
    return -np.expm1(-np.where(prev == NO_TS, 0, t - prev) / tau_ms)


@pytest.mark.parametrize("seed", range(3))
def test_drift_means_are_what_the_whole_array_form_gives(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    checks = 0
    for _ in range(300):
        mean, last, next_check, t, v, n = drift_case(rng)
        alpha = alpha_of(t, last, float(rng.choice([600_000.0, 3_600_000.0])))
        every = int(rng.choice([1, 900_000, 3_600_000]))
        a, b = (mean.copy(), last.copy(), next_check.copy()), (mean.copy(), last.copy(), next_check.copy())
        got = _drift_means(*a, t, v, alpha, n, every)
        want = reference.drift_means(*b, t, v, alpha, n, every)
        assert np.array_equal(got, want)
        checks += int(got.sum())
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y, equal_nan=True)
    assert checks > 100


@pytest.mark.parametrize("seed", range(3))
def test_drift_quiet_is_flags_reading_by_reading(seed: int) -> None:
    """Where no neighbourhood can reach its minimum the quiet stretch commits exactly the state
    `flags` leaves, reading by reading: means (to the last bit), times, checks."""
    rng = np.random.default_rng(300 + seed)
    for _ in range(100):
        mean, last, next_check, t, v, n = drift_case(rng)
        k = v.shape[0]
        nb = np.array([[j for j in range(k) if j != i][:4] + [-1] * (4 - min(4, k - 1)) for i in range(k)])
        off_since = np.where(rng.random(k) < 0.5, NO_TS, T0)
        fast, slow = (Drift(nb, 3_600_000, low=0.1, high=math.inf, min_level=10.0, min_neighbours=2,
                            duration_ms=1_800_000, every_ms=900_000) for _ in range(2))
        for d in (fast, slow):
            d.mean[:], d.last_ts[:], d.next_check[:], d.off_since[:] = mean, last, next_check, off_since
        s = np.arange(k)
        commit = fast.quiet(s, t, v, n)
        assert commit is not None
        commit()
        for c in range(v.shape[1]):
            on = np.flatnonzero(n > c)
            assert not slow.flags(s[on], t[on, c], v[on, c]).any()
        for name in ("mean", "last_ts", "next_check", "off_since", "flagged"):
            assert np.array_equal(getattr(fast, name), getattr(slow, name), equal_nan=True), name


def append_case(rng: np.random.Generator) -> tuple[Windows, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    win = filled_windows(rng, int(rng.integers(1, 30)), int(rng.choice([1, 4, 16])))
    k = int(rng.integers(1, win.n + 1))
    rows = rng.permutation(win.n)[:k]
    m = int(rng.integers(1, 3 * win.capacity + 2))  # more than the ring holds, now and then
    newest = np.maximum(win.last_ts[rows], T0)
    ts = newest[:, None] + np.cumsum(rng.integers(1, 400_000, (k, m)), axis=1)
    value = np.round(rng.random((k, m)) * rng.choice([0.0, 0.1, 30.0], size=(k, 1)), 1)
    value[rng.random((k, m)) < 0.05] = -0.0
    return win, rows, ts, value, rng.integers(1, m + 1, k)


def ring_state(win: Windows) -> list[np.ndarray]:
    return [win.data, win.end, win.count, win.last_ts, win.total, win.newest_before]


@pytest.mark.parametrize("seed", range(3))
def test_append_runs_is_the_whole_array_form_and_undoes(seed: int) -> None:
    rng = np.random.default_rng(400 + seed)
    for _ in range(150):
        win, rows, ts, value, n = append_case(rng)
        before = [a.copy() for a in ring_state(win)]
        twin = [a.copy() for a in before]
        undo = win.append_runs(rows, ts, value, n)
        want = reference.append_runs(*twin, win.capacity, win.mask, win.n, rows, ts, value, n)
        for got, ref in zip(ring_state(win), twin, strict=True):
            assert np.array_equal(got, ref) and np.array_equal(np.signbit(got), np.signbit(ref))
        assert np.array_equal(undo.flat, want[0]) and np.array_equal(undo.data, want[1])
        win.undo(undo)
        for got, ref in zip(ring_state(win), before, strict=True):
            assert np.array_equal(got, ref)


@pytest.mark.parametrize("seed", range(3))
def test_append_runs_is_appends_one_at_a_time(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    for _ in range(60):
        win, rows, ts, value, n = append_case(rng)
        one = Windows(win.n, win.capacity, win.span_ms)
        for a in ("data", "end", "count", "last_ts", "total", "newest_before"):
            getattr(one, a)[...] = getattr(win, a)
        win.append_runs(rows, ts, value, n)
        for c in range(ts.shape[1]):
            on = np.flatnonzero(n > c)
            one.insert(rows[on], ts[on, c], value[on, c])
        for got, ref in zip(ring_state(win), ring_state(one), strict=True):
            assert np.array_equal(got, ref)


def threshold_case(rng: np.random.Generator) -> tuple[ThresholdDetector, np.ndarray, ...]:
    subjects, columns = int(rng.integers(1, 20)), int(rng.integers(1, 5))
    enter = np.sort(rng.choice([5.0, 10.0, 20.0, 50.0, np.nan], size=(subjects, columns)), axis=1)
    hold = int(rng.choice([0, 600_000]))
    det = ThresholdDetector(enter, rng.choice([0.0, 2.0]), hold, int(rng.choice([0, 900_000])))
    det.below_since[...] = np.where(rng.random(enter.shape) < 0.5, NO_TS, T0 - 1_000_000)
    k = int(rng.integers(1, subjects + 1))
    rows = rng.permutation(subjects)[:k]
    m = int(rng.integers(1, 12))
    ts = T0 + np.cumsum(rng.choice([1, 300_000, 900_000], size=(k, m)), axis=1)
    # mostly below the lowest enter (in the band of a hysteresis of 2, or under it), now and then above
    value = rng.choice([0.0, 2.9, 3.0, 4.5, np.nan], size=(k, m, columns))
    value[rng.random((k, m, columns)) < 0.02] = rng.choice([8.0, 19.0, 49.0, 60.0])
    return det, rows, ts, value, rng.integers(1, m + 1, k)


@pytest.mark.parametrize("seed", range(3))
def test_quiet_since_is_the_whole_array_form_and_update_reading_by_reading(seed: int) -> None:
    rng = np.random.default_rng(600 + seed)
    decided = {True: 0, False: 0}
    for _ in range(300):
        det, rows, ts, value, n = threshold_case(rng)
        got = _quiet_since(det.enter, det.exit, det.below_since, rows, ts, value, n, det._timed)
        want = reference.quiet_since(det.enter, det.exit, det.below_since, rows, ts, value, n, det._timed)
        assert (got is None) == (want is None)
        if got is not None and want is not None:
            assert np.array_equal(got, want)
        slow = ThresholdDetector(det.enter, det.enter - det.exit, det.hold_enter, det.hold_exit)
        slow.below_since[...] = det.below_since
        commit = det.quiet(rows, ts, value, n)
        raised = False
        for c in range(ts.shape[1]):
            on = np.flatnonzero(n > c)
            raised |= bool(slow.update(rows[on], ts[on, c], value[on, c]).any())
        decided[commit is None] += 1
        if commit is not None:
            assert not raised
            commit()
            assert np.array_equal(det.below_since, slow.below_since)
            assert np.array_equal(det.above_since, slow.above_since)
    assert min(decided.values()) > 40
