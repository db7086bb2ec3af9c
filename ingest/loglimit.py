"""At most so many log lines a minute per key: a flood (bad input, a device with a broken
clock) is counted in full in the metrics, but must not drown the log."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class LogLimit:
    """At most `per_window` log lines per key (a reason, a cause) every `window_s`, then one
    summary of how many more there were."""

    def __init__(self, per_window: int = 20, window_s: float = 60.0, what: str = "rejections"):
        self.per_window = per_window
        self.window_s = window_s
        self.what = what
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (window start, lines in it)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        start, n = self._seen.get(key, (now, 0))
        if now - start >= self.window_s:
            if n > self.per_window:
                log.warning("%d more %s %s in the last %.0f s were not logged one by one",
                            n - self.per_window, key, self.what, now - start)
            start, n = now, 0
        self._seen[key] = (start, n + 1)
        if n == self.per_window:
            log.warning("more than %d %s %s a minute: logging a summary instead", n, key, self.what)
        return n < self.per_window
