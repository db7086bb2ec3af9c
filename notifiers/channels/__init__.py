"""Delivery channels, one module each, built from the notifier configuration."""

from __future__ import annotations

import importlib

from ews.config import ChannelConfig
from notifiers.channels.base import Channel, DeliveryError, Notification, RetryPolicy
from notifiers.channels.console import ConsoleChannel
from notifiers.channels.webhook import WebhookChannel

__all__ = [
    "Channel", "ConsoleChannel", "DeliveryError", "Notification", "RetryPolicy",
    "WebhookChannel", "build_channel", "build_channels",
]


_LAZY: dict[str, tuple[str, str]] = {
    "wecom": ("notifiers.channels.wecom", "WeComChannel"),
    "dingtalk": ("notifiers.channels.dingtalk", "DingTalkChannel"),
    "feishu": ("notifiers.channels.feishu", "FeishuChannel"),
    "smtp": ("notifiers.channels.smtp", "SmtpChannel"),
    "sms": ("notifiers.channels.sms", "SmsChannel"),
    "devices": ("notifiers.channels.devices", "DeviceChannel"),
    "alertmanager": ("notifiers.channels.alertmanager", "AlertmanagerChannel"),
    "cap": ("notifiers.channels.cap", "CapChannel"),
}


def build_channel(cfg: ChannelConfig) -> Channel:
    if cfg.type == "console":
        return ConsoleChannel(cfg.name, retry=RetryPolicy.from_config(cfg))
    if cfg.type == "webhook":
        return WebhookChannel.from_config(cfg)
    if cfg.type in _LAZY:
        # imported on use: the device channel pulls in paho, the cap channel an HTTP server
        module, cls = _LAZY[cfg.type]
        return getattr(importlib.import_module(module), cls).from_config(cfg)
    raise ValueError(f"unknown channel type {cfg.type!r}")


def build_channels(cfgs: list[ChannelConfig]) -> dict[str, Channel]:
    out: dict[str, Channel] = {}
    for cfg in cfgs:
        if cfg.name in out:
            raise ValueError(f"channel name {cfg.name!r} appears twice")
        out[cfg.name] = build_channel(cfg)
    return out
