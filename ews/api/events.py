"""Server-sent events: warning transitions and acknowledgements, live to every dashboard.

The hub is one of the pipeline's transition listeners, so it is called on the ingest or
timer thread; it hands each event to every subscriber's asyncio queue through its event
loop, never blocking the caller. A subscriber whose queue is full (a stalled browser) gets a
`resync` event instead of the ones it missed, and the dashboard then reloads its lists:
nothing waits for a slow client and a client never silently misses a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ews import metrics
from ews.api.auth import Principal
from notifiers.lifecycle import Transition

QUEUE_SIZE = 256
HEARTBEAT_S = 15.0


@dataclass
class _Subscriber:
    principal: Principal
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any] | None]
    overflowed: bool = False


@dataclass
class EventHub:
    to_json: Callable[[dict[str, Any]], dict[str, Any]]  # stored warning row -> contract JSON
    _subs: dict[int, _Subscriber] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    closed: bool = False

    def on_transition(self, t: Transition) -> None:
        if t.warning.get("drill"):
            return  # the duty screen shows real warnings; drills have their own lane
        self.publish("transition", {"type": t.type, "level_before": t.level_before.key,
                                    "level_after": t.level_after.key, "warning": self.to_json(t.warning)},
                     str(t.warning["community"]))

    def publish(self, event: str, data: dict[str, Any], region: str) -> None:
        item = {"event": event, "id": next(self._seq), "data": data, "region": region}
        with self._lock:
            subs = list(self._subs.values())
        for s in subs:
            if s.principal.sees(region):
                with contextlib.suppress(RuntimeError):  # loop already closed: the stream ended
                    s.loop.call_soon_threadsafe(self._offer, s, item)

    @staticmethod
    def _offer(s: _Subscriber, item: dict[str, Any]) -> None:
        if s.overflowed:
            return
        try:
            s.queue.put_nowait(item)
        except asyncio.QueueFull:
            s.overflowed = True

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self.closed = True
        with self._lock:
            subs = list(self._subs.values())
        for s in subs:
            with contextlib.suppress(RuntimeError):
                s.loop.call_soon_threadsafe(s.queue.put_nowait, None)

    async def stream(self, principal: Principal, is_disconnected: Callable[[], Any]) -> AsyncIterator[str]:
        """The text/event-stream of one subscriber."""
        sub = _Subscriber(principal, asyncio.get_running_loop(), asyncio.Queue(QUEUE_SIZE))
        key = next(self._ids)
        with self._lock:
            self._subs[key] = sub
        metrics.API_STREAMS.inc()
        try:
            # the browser reconnects after 3 s if the stream breaks
            yield "retry: 3000\n" + _frame("hello", 0, {"principal": principal.json()})
            while not self.closed:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    if await is_disconnected():
                        break
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    break
                if sub.overflowed:
                    # drain what is queued and tell the client to reload its lists
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    sub.overflowed = False
                    yield _frame("resync", int(item["id"]), {"reason": "events were dropped for a slow client"})
                    continue
                yield _frame(str(item["event"]), int(item["id"]), item["data"])
        finally:
            with self._lock:
                self._subs.pop(key, None)
            metrics.API_STREAMS.dec()

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)


def _frame(event: str, seq: int, data: dict[str, Any]) -> str:
    return f"event: {event}\nid: {seq}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
