"""Delivery channels, one module each, built from the notifier configuration."""

from __future__ import annotations

from ews.config import ChannelConfig
from notifiers.channels.base import Channel, DeliveryError, Notification, RetryPolicy
from notifiers.channels.console import ConsoleChannel
from notifiers.channels.webhook import WebhookChannel

__all__ = [
    "Channel", "ConsoleChannel", "DeliveryError", "Notification", "RetryPolicy",
    "WebhookChannel", "build_channel", "build_channels",
]


def build_channel(cfg: ChannelConfig) -> Channel:
    if cfg.type == "console":
        return ConsoleChannel(cfg.name, retry=RetryPolicy.from_config(cfg))
    if cfg.type == "webhook":
        return WebhookChannel.from_config(cfg)
    raise ValueError(f"unknown channel type {cfg.type!r}")


def build_channels(cfgs: list[ChannelConfig]) -> dict[str, Channel]:
    out: dict[str, Channel] = {}
    for cfg in cfgs:
        if cfg.name in out:
            raise ValueError(f"channel name {cfg.name!r} appears twice")
        out[cfg.name] = build_channel(cfg)
    return out
