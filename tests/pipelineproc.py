"""`ews run` in a child process, as operators start it, for the tests that kill or restart it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .waiting import wait_for

REPO = Path(__file__).resolve().parent.parent


def start_pipeline(cfg: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """`python -m ews.cli run --config cfg`, its output appended to `log` (earlier runs may have
    written there too); returns once the broker has its subscription, so that what is published
    from then on reaches this run. `env` adds to the environment."""
    mark = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ews.cli", "run", "--config", str(cfg)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    ok = wait_for(lambda: b"MQTT subscribed" in log.read_bytes()[mark:] or proc.poll() is not None, 60)
    assert ok and proc.poll() is None, log.read_text(encoding="utf-8", errors="replace")[-3000:]
    return proc
