"""Flapping suppression: a subject whose level keeps changing is held at its highest level.

Hysteresis and hold times stop most flapping; what they miss (a reading that wanders across a
threshold for an hour) would page the same people again and again. When a subject's level has
changed `changes` times within `within` of event time, it is flapping: from then on a higher
level is still reported at once, but a lower one is not, until the level has stayed unchanged
for `within`; then the subject reports its true level again (one lower or resolve message).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.windows import NO_TS, BoolArray, IntArray

Levels = npt.NDArray[np.int8]


class FlapGuard:
    def __init__(self, n: int, changes: int, within_ms: int):
        if changes < 2:
            raise ValueError("flapping needs at least 2 changes")
        self.changes = int(changes)
        self.within_ms = int(within_ms)
        self.times = np.full((n, self.changes), NO_TS, np.int64)  # ring of recent change times
        self.pos = np.zeros(n, np.int64)
        self.flapping = np.zeros(n, np.bool_)
        self.last_change = np.full(n, NO_TS, np.int64)

    def report(self, s: IntArray, t: IntArray, raw_old: Levels, raw_new: Levels, shown: Levels) -> Levels:
        """Levels to report for subjects `s` whose raw level moved from raw_old to raw_new."""
        for i in np.flatnonzero(raw_new != raw_old):
            self._changed(int(s[i]), int(t[i]))
        flapping = self.flapping[s]
        quiet = flapping & (t - self.last_change[s] >= self.within_ms)
        if quiet.any():
            self.flapping[s[quiet]] = False
            flapping = flapping & ~quiet
        out: Levels = np.where(flapping, np.maximum(shown, raw_new), raw_new).astype(np.int8)
        return out

    def _changed(self, s: int, t: int) -> None:
        p = int(self.pos[s])
        self.times[s, p] = t
        self.pos[s] = (p + 1) % self.changes
        oldest = int(self.times[s, self.pos[s]])  # the first of the last `changes` changes
        self.last_change[s] = t
        if oldest != NO_TS and t - oldest <= self.within_ms:
            self.flapping[s] = True

    def held(self) -> BoolArray:
        return self.flapping.copy()
