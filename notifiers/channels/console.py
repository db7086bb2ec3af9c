"""A channel that writes one readable line per notification (for duty screens and demos)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from notifiers.channels.base import Channel, Notification, RetryPolicy


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class ConsoleChannel(Channel):
    def __init__(
        self, name: str = "console", sink: Callable[[str], None] | None = None,
        retry: RetryPolicy | None = None,
    ):
        self.name = name
        self.sink = sink or _stdout
        self.retry = retry or RetryPolicy()

    def send(self, note: Notification) -> None:
        self.sink(format_line(note))


def format_line(note: Notification) -> str:
    w = note.warning
    who = ", ".join(r.get("name", r.get("id", "?")) for r in note.recipients)
    return (
        f"[{w.get('level', '?').upper()}] {w.get('id', '?')} {note.transition}: "
        f"{note.message} -> {who}"
    )
