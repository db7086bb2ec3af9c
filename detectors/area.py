"""Area rules: a region is at level L when at least k of its n sensors are at L or above.

One rain gauge at 60 mm may be a local downpour or a fault; three gauges of one street at
orange is a street at orange. Per region the counts of sensors at each level are kept up to
date as single sensors change level (changes are rare, so updates are cheap), and the region's
level is the highest L whose count at L or above reaches the region's k. A region whose
sensors are fewer than its k never reaches a level.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.windows import IntArray

N_LEVELS = 5  # 0 (none) .. 4 (red)


class AreaCounter:
    def __init__(self, group_of_subject: IntArray, need: IntArray):
        """`group_of_subject` (n,) region index of each sensor; `need` (G,) the k of each region."""
        self.group = np.asarray(group_of_subject, np.int64)
        self.need = np.asarray(need, np.int64)
        self.counts = np.zeros((self.need.shape[0], N_LEVELS), np.int64)
        self.counts[:, 0] = np.bincount(self.group, minlength=self.need.shape[0])

    def move(self, subjects: IntArray, old: npt.NDArray[np.int8], new: npt.NDArray[np.int8]) -> IntArray:
        """Record sensors changing level; returns the regions touched."""
        g = self.group[subjects]
        np.add.at(self.counts, (g, old.astype(np.int64)), -1)
        np.add.at(self.counts, (g, new.astype(np.int64)), 1)
        out: IntArray = np.unique(g)
        return out

    def at_or_above(self, groups: IntArray) -> IntArray:
        """(G', 5): sensors of each region at level L or above, per L."""
        out: IntArray = self.counts[groups][:, ::-1].cumsum(axis=1)[:, ::-1]
        return out

    def levels(self, groups: IntArray) -> npt.NDArray[np.int8]:
        reached = self.at_or_above(groups)[:, 1:] >= self.need[groups][:, None]
        lv = np.arange(1, N_LEVELS)
        out: npt.NDArray[np.int8] = (reached * lv).max(axis=1).astype(np.int8)
        return out
