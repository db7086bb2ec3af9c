"""The newest reading of every sensor, as the dashboard and the sensors endpoint read it."""

from __future__ import annotations

import numpy as np
import pytest

from ews.latest import NEVER, LatestReadings, take_newest_by_sorting
from ews.models import ReadingBatch

T0 = 1_782_000_000_000


@pytest.mark.parametrize("seed", range(4))
def test_update_keeps_what_the_whole_array_form_keeps(seed: int) -> None:
    """Repeats, readings at the same time with different values, late readings, sensors out of
    range, across several batches."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    fast, slow = LatestReadings(n), LatestReadings(n)
    for step in range(40):
        k = int(rng.integers(0, 200))
        batch = ReadingBatch(rng.integers(-2, n + 2, k).astype(np.int64),
                             T0 + rng.integers(0, 20, k).astype(np.int64) * 60_000 + step * 30_000,
                             rng.choice([0.0, 1.5, -0.0, np.nan, 7.25], size=k))
        fast.update(batch, T0 + step)
        take_newest_by_sorting(slow.ts_ms, slow.value, slow.seen_ms, batch.sensor, batch.ts_ms, batch.value,
                               T0 + step)
        for a, b in zip(fast.snapshot(), slow.snapshot(), strict=True):
            assert np.array_equal(a.view(np.int64), b.view(np.int64))
    assert (fast.ts_ms != NEVER).sum() > 0


def test_the_last_of_equal_times_wins_and_older_ones_only_count_as_heard() -> None:
    latest = LatestReadings(3)
    latest.update(ReadingBatch(np.array([1, 1, 1]), np.array([T0 + 5, T0 + 9, T0 + 9]), np.array([1.0, 2.0, 3.0])), 100)
    assert latest.get(1) == (T0 + 9, 3.0, 100)
    latest.update(ReadingBatch(np.array([1, 7, -1]), np.array([T0, T0, T0]), np.array([4.0, 5.0, 6.0])), 200)
    assert latest.get(1) == (T0 + 9, 3.0, 200)  # older: heard from, not newer
    assert latest.get(0) is None and latest.get(2) is None
