"""The `cap` channel: records each public warning notice as a CAP 1.2 message for the feed.

Sending means issuing: the message is built (notifiers.cap), chained to the warning's earlier
messages and stored (notifiers.cap_store) in one SQLite transaction, under the notification's
idempotency key, so a retried or repeated send issues nothing twice. Aggregators then fetch it
from the Atom feed (notifiers.cap_feed), which this channel serves itself when `listen` is set.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ews.config import ChannelConfig
from ews.hostport import split_listen
from notifiers.cap import CapMessage, CapSettings, Reference, build, identifier, msg_type_for
from notifiers.cap_feed import CapFeedServer
from notifiers.cap_store import CapStore
from notifiers.channels.base import Channel, DeliveryError, Notification, RetryPolicy
from notifiers.channels.texts import ChannelTexts, packaged

log = logging.getLogger(__name__)


class CapChannel(Channel):
    def __init__(
        self, name: str, store: CapStore, settings: CapSettings, *, texts: ChannelTexts | None = None,
        retry: RetryPolicy | None = None, feed: CapFeedServer | None = None,
    ):
        self.name = name
        self.store = store
        self.settings = settings
        self.texts = texts or packaged("zh-CN")
        self.retry = retry or RetryPolicy()
        self.feed = feed

    @classmethod
    def from_config(cls, cfg: ChannelConfig) -> CapChannel:
        if cfg.db is None or not cfg.sender or not cfg.sender_name:
            raise ValueError(f"cap channel {cfg.name} needs db, sender and sender_name")
        settings = CapSettings(
            sender=cfg.sender, sender_name=cfg.sender_name, contact=cfg.contact, base_url=cfg.base_url,
            **({"ttl_s": cfg.ttl_s} if cfg.ttl_s else {}),
        )
        store = CapStore(Path(cfg.db))
        feed = None
        if cfg.listen:
            host, port = split_listen(cfg.listen, lowest=0)  # checked when the configuration was read
            feed = CapFeedServer(store, host, port, base_url=cfg.base_url,
                                 title=f"{cfg.sender_name} 预警信息", author=cfg.sender_name).start()
        return cls(cfg.name, store, settings, texts=packaged(cfg.language), retry=RetryPolicy.from_config(cfg),
                   feed=feed)

    def send(self, note: Notification) -> None:
        if note.notice != "transition":
            # reminders, escalations, groups and failure notices are for staff, not the public
            return
        w = note.warning
        warning_id = str(w.get("id", ""))
        district = str(((w.get("region") or {}).get("district") or {}).get("code", ""))

        def make(earlier: list[Reference]) -> CapMessage | None:
            mtype = msg_type_for(note.transition, bool(earlier))
            if mtype is None:
                return None
            return build(note, msg_type=mtype, ident=identifier(warning_id, note.transition_id, district),
                         references=earlier, settings=self.settings, texts=self.texts)

        try:
            out = self.store.issue(note.idempotency_key, warning_id, make)
        except sqlite3.Error as exc:
            raise DeliveryError(f"cap {self.name}: could not record the message: {exc!r}", retryable=True) from exc
        if out is None:
            log.info("cap %s: %s of %s is not published (the feed never announced the warning)",
                     self.name, note.transition, warning_id)

    def close(self) -> None:
        if self.feed is not None:
            self.feed.stop()
        self.store.close()
