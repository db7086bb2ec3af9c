"""One pipeline process per state folder: a second is refused, naming the first; the lock dies
with its process, however it ends."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ews import statelock

from .waiting import wait_for

HOLD = """
import sys, time
from pathlib import Path
from ews import statelock
statelock.claim(Path(sys.argv[1]), "state_dir")
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_is_refused_until_the_first_is_gone(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(statelock.FolderInUse, match=rf"in use by another pipeline process \(pid {holder.pid}\)"):
            statelock.claim(tmp_path, "state_dir")
        holder.send_signal(signal.SIGKILL)  # no goodbye: the kernel drops the lock
        holder.wait(10)
        assert wait_for(lambda: _claims(tmp_path), 5)
    finally:
        if holder.poll() is None:
            holder.kill()
    statelock.release(tmp_path)


def test_one_process_may_claim_again_and_releases_with_the_last_claim(tmp_path: Path) -> None:
    statelock.claim(tmp_path, "state_dir")
    statelock.claim(tmp_path, "state_dir")
    statelock.release(tmp_path)
    other = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", ""), str(tmp_path)],
                           capture_output=True, text=True, timeout=30)
    assert other.returncode != 0 and "FolderInUse" in other.stderr  # still held once
    statelock.release(tmp_path)
    other = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", ""), str(tmp_path)],
                           capture_output=True, text=True, timeout=30)
    assert other.returncode == 0 and other.stdout.strip() == "held", other.stderr


def _claims(folder: Path) -> bool:
    try:
        statelock.claim(folder, "state_dir")
    except statelock.FolderInUse:
        return False
    return True
