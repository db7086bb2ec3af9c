"""`host:port` to serve on, as the configuration and the command line write it."""

from __future__ import annotations


def split_listen(text: str, lowest: int = 1) -> tuple[str, int]:
    """'127.0.0.1:8090' -> ('127.0.0.1', 8090); the host may be left out (127.0.0.1). A port
    outside `lowest`-65535 is refused here, not by `bind()` with an OverflowError (`lowest` 0:
    any free port, as a test's configuration asks)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not lowest <= int(port) <= 65535:
        raise ValueError(f"must be host:port with a port of {lowest}-65535, got {text!r}")
    return host or "127.0.0.1", int(port)
