"""Polling for a condition in tests that drive real servers, bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(pred: Callable[[], object], timeout: float = 30.0, interval: float = 0.05) -> bool:
    """True as soon as pred() is truthy; False once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False
