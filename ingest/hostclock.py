"""Whether this host's clock is behind the sensors'.

A reading more than `future_tolerance_s` ahead of the receiving clock is rejected: a sensor
whose clock runs ahead would otherwise carry the rules' event time forward, and the correct
readings after it would come too late to be evaluated. But when it is this host's clock that
is behind (a machine back from a power cut with the time it saved at shutdown, on an intranet
without a time server), every reading looks ahead and every one would be rejected: nothing
stored, nothing warned, in the very storm that cut the power. The fleet tells the two apart:
many sensors agree with each other and disagree with this host.

Per sensor, the offset of its newest reading from the receiving clock is kept. When at least
`min_sensors` were heard from in the last `horizon_ms` and nine in ten of them are ahead by
more than the tolerance, this host is taken to be behind by their median offset: readings are
then judged against the sensors' clock (each is still rejected if it is ahead of that by more
than the tolerance). It is logged as an error and shown in
`ews_ingest_host_clock_behind_seconds`, since the rest of the system (no-data timers,
reminders, the warnings' times) keeps running on the host's clock until someone mends it.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from ews import metrics

log = logging.getLogger(__name__)
IntArray = npt.NDArray[np.int64]
NEVER = np.iinfo(np.int64).min


class FleetClock:
    def __init__(self, n_sensors: int, tolerance_ms: int, min_sensors: int = 10, share: float = 0.9,
                 horizon_ms: int = 300_000):
        self.tolerance_ms = tolerance_ms
        self.min_sensors = min_sensors
        self.share = share
        self.horizon_ms = horizon_ms
        self._offset = np.zeros(n_sensors, np.int64)  # newest event time minus receipt, per sensor
        self._heard = np.full(n_sensors, NEVER, np.int64)  # receipt time of that reading
        self.behind_ms = 0
        self._observed = NEVER

    def now(self, host_ms: int) -> int:
        """The time by the best clock known: the sensors' when this host's is behind theirs."""
        return host_ms + self.behind_ms

    def due(self, now_ms: int, every_ms: int = 1000) -> bool:
        """Whether a batch with nothing ahead should be observed anyway (once a second is plenty
        to follow the fleet and costs nothing at full speed)."""
        return now_ms - self._observed >= every_ms

    def observe(self, sensor: IntArray, ts: IntArray, now_ms: int) -> int:
        """Take a batch's readings (registry index, event time in ms) received at `now_ms`
        by this host's clock; returns how far that clock is taken to be behind (0: it is not)."""
        self._observed = now_ms
        if sensor.shape[0]:
            newest_last = np.argsort(ts, kind="stable")  # mostly in order already: cheap
            self._offset[sensor[newest_last]] = ts[newest_last] - now_ms
            self._heard[sensor] = now_ms
        recent = self._heard >= now_ms - self.horizon_ms
        n = int(np.count_nonzero(recent))
        behind = 0
        if n >= self.min_sensors:
            offsets = self._offset[recent]
            if np.count_nonzero(offsets > self.tolerance_ms) >= self.share * n:
                behind = int(np.median(offsets))
        self._settle(behind, n)
        return behind

    def _settle(self, behind: int, heard: int) -> None:
        if behind and not self.behind_ms:
            log.error("this host's clock is %.0f s behind the sensors' (the median of %d sensors heard in the "
                      "last %.0f min, nine in ten of them ahead): check its time sync (NTP); readings are judged "
                      "against the sensors' clock meanwhile", behind / 1000, heard, self.horizon_ms / 60_000)
        elif self.behind_ms and not behind:
            log.warning("this host's clock agrees with the sensors' again")
        self.behind_ms = behind
        metrics.HOST_CLOCK_BEHIND.set(behind / 1000)
