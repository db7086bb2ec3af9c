"""The broker's in-flight window: how many QoS 1 messages it sends us before it waits for acks.

The collector acknowledges a batch only once it is stored, so a broker that stops at N
unacknowledged messages sends nothing more until that batch is written. Most brokers stop
early by default: EMQX's `mqtt.max_inflight` is 32 (under MQTT 5 the smaller of it and our
Receive Maximum), VerneMQ's and Mosquitto's `max_inflight_messages` 20. Lingering for more
messages then only adds `flush_interval_s` to every batch: behind EMQX's default a backlog
drained at 569 messages a second against 22,239 with the window raised (bench/inflight.py).
So a batch closes as soon as the window is full: 6,292 a second.

Under MQTT 5 an upper bound is known, our Receive Maximum; the broker may keep a lower one,
and under 3.1.1 it never says. The window is therefore also learned: deliveries that answer
our acknowledgement and stop early in a linger, twice in a row at the same number of
unacknowledged messages, name it (the collector tells which deliveries answer an ack). A
learned window that is exceeded later was not one (a burst of that size, a broker
reconfigured) and is forgotten. Counts below `MIN_LEARNED` are not learned: a trickle of a
few messages a linger stops at the same small count often, and there a linger costs little.
"""

from __future__ import annotations

MIN_LEARNED = 8


class InflightWindow:
    def __init__(self, known: int | None = None):
        self.known = known  # our own Receive Maximum (MQTT 5), else None
        self.learned: int | None = None
        self._candidate: int | None = None

    @property
    def limit(self) -> int | None:
        """The number of unacknowledged messages past which the broker sends nothing more."""
        if self.learned is None:
            return self.known
        return self.learned if self.known is None else min(self.known, self.learned)

    def full(self, unacked: int) -> bool:
        """Whether no more messages can come until we acknowledge some."""
        if self.learned is not None and unacked > self.learned:
            self.forget()
        limit = self.limit
        return limit is not None and unacked >= limit

    def stalled(self, unacked: int) -> int | None:
        """Arrivals stopped early in a linger with `unacked` messages unacknowledged; the window
        when this names it (the second such stop in a row at the same count)."""
        if unacked < MIN_LEARNED or unacked == self.learned:
            return None
        if unacked == self._candidate:
            self.learned, self._candidate = unacked, None
            return unacked
        self._candidate = unacked
        return None

    def forget(self) -> None:
        """A new connection, or a window exceeded: learn again from scratch."""
        self.learned = self._candidate = None
