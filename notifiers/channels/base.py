"""What every delivery channel offers the outbox: a name, a retry policy and `send`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ews.config import ChannelConfig


class DeliveryError(Exception):
    """A send failed; `retryable` says whether trying again later may succeed."""

    def __init__(self, reason: str, *, retryable: bool):
        super().__init__(reason)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff_s: float = 0.5
    max_backoff_s: float = 60.0

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> RetryPolicy:
        return cls(cfg.max_attempts, cfg.backoff_s, cfg.max_backoff_s)

    def delay_s(self, failures: int, jitter: float) -> float:
        """Wait after the `failures`-th failed attempt; `jitter` in [0, 1) spreads retries
        of many rows over the second half of the interval so they do not arrive together."""
        base = min(self.backoff_s * 2.0 ** (failures - 1), self.max_backoff_s)
        return base * (0.5 + 0.5 * jitter)


@dataclass(frozen=True, slots=True)
class Notification:
    """One outbox row as a channel sees it."""

    outbox_id: int
    idempotency_key: str
    channel: str
    transition: str
    transition_id: int
    warning: dict[str, Any]
    recipients: list[dict[str, Any]]
    message: str
    attempt: int = 1
    # what kind of message: "transition" (transition is open/raise/lower/resolve), "group"
    # (several, listed in items), "remind", "escalate" or "delivery_failed"
    notice: str = "transition"
    items: tuple[dict[str, Any], ...] = ()  # a group's items: transition, warning, message
    drill: bool = False  # a drill (演练): the message says so; public channels should not act

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Notification:
        payload = row["payload"]
        return cls(
            outbox_id=int(row["id"]),
            idempotency_key=row["idempotency_key"],
            channel=row["channel"],
            transition=payload["transition"],
            transition_id=int(row["transition_id"]),
            warning=payload["warning"],
            recipients=row["recipients"],
            message=payload["message"],
            attempt=int(row["attempts"]) + 1,
            notice=str(payload.get("notice", row.get("notice", "transition"))),
            items=tuple(payload.get("items", ())),
            drill=bool(payload.get("drill", payload["warning"].get("drill", False))),
        )


class Channel(ABC):
    name: str
    retry: RetryPolicy = RetryPolicy()

    @abstractmethod
    def send(self, note: Notification) -> None:
        """Deliver or raise DeliveryError."""

    def close(self) -> None:  # noqa: B027 - most channels hold nothing to release
        """Release connections; the default has none."""
