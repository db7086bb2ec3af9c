"""Which parts of a multi-part send were already accepted, so a retry skips them.

Channels that make one request per phone or per device can fail half-way; the outbox then
retries the whole notification. Remembering the accepted parts (bounded, in memory) keeps a
retry in the same process from repeating them; after a restart the per-part idempotency key
sent with every request lets the receiver drop the repeat.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class AcceptedParts:
    def __init__(self, capacity: int = 50_000):
        self.capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    def add(self, key: str) -> None:
        with self._lock:
            self._keys[key] = None
            self._keys.move_to_end(key)
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)
