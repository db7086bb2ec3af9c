"""One pipeline process per state folder and per spool folder.

Two pipelines started on the same configuration (a systemd unit and a hand-started copy, two
shards given one `state_dir`) would each send every warning, and their spools would number
their files alike: one's batch written over the other's, readings lost that both had
acknowledged. So each folder is claimed with an exclusive `flock` on a `LOCK` file holding
the claimant's pid; a second process is refused at start with a message naming that pid. The
kernel drops the lock when the process ends, however it ends (`kill -9` included), so no stale
lock is left to clean. Within one process a folder may be claimed again (tools and tests build
several pipeline objects in turn); it is released when the last claim is.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

LOCK_NAME = "LOCK"
_held: dict[Path, tuple[int, int]] = {}  # folder -> (descriptor, claims in this process)
_guard = threading.Lock()


class FolderInUse(RuntimeError):
    """Another process holds the folder."""


def claim(folder: Path, what: str) -> Path:
    """Claim `folder` (made if missing) for this process; raises FolderInUse naming the holder."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with _guard:
        if folder in _held:
            fd, n = _held[folder]
            _held[folder] = (fd, n + 1)
            return folder
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUse(
                f"{what} {folder} is in use by another pipeline process (pid {holder}); two pipelines on one "
                f"{what} would overwrite each other's spooled readings and send every warning twice: stop the "
                f"other one, or give each its own state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[folder] = (fd, 1)
        return folder


def release(folder: Path) -> None:
    folder = Path(folder).resolve()
    with _guard:
        if folder not in _held:
            return
        fd, n = _held[folder]
        if n > 1:
            _held[folder] = (fd, n - 1)
            return
        del _held[folder]
        os.close(fd)
