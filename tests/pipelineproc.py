"""`ews run` in a child process, as operators start it, for the tests that kill or restart it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .waiting import wait_for

REPO = Path(__file__).resolve().parent.parent


class PipelineRun:
    """`python -m ews.cli run --config cfg`, stopped as systemd stops it or killed with no goodbye."""

    def __init__(self, cfg: Path, log: Path, args: Sequence[str] = (), **env: str) -> None:
        """Start it, its output appended to `log` (earlier runs may have written there too);
        return once the broker has its subscription, so that what is published from then on
        reaches this run. `args` follow `--config cfg`; `env` adds to the environment."""
        self.log = log
        mark = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ews.cli", "run", "--config", str(cfg), *args],
                                         cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
        proc = self.proc
        ok = wait_for(lambda: b"MQTT subscribed" in log.read_bytes()[mark:] or proc.poll() is not None, 60)
        started = ok and proc.poll() is None
        if not started and proc.poll() is None:  # never subscribed: not left running past the failed test
            self.kill()
        assert started, log.read_text(encoding="utf-8", errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL: no draining, no goodbye."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM, and its exit code; a run still there after 30 s is killed (code -9)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode
