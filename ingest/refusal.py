"""What InfluxDB's refusal of a write means, and which of the written lines it concerns.

InfluxDB answers a write it cannot take whole in one of two ways, and they call for opposite
handling:

- **413, the request is too large** (InfluxDB's `max-body-size`, or a proxy in front of it:
  nginx refuses bodies over 1 MB unless told otherwise). Nothing was stored; the same lines in
  smaller requests go in.
- **400 (v1) or 422 (v2) with `partial write: <reason> dropped=<n>`**: every other point of the
  request *was* stored; `n` were left out, for a reason InfluxDB names: older than the
  retention policy keeps, a field type conflict (the series was first written with an integer
  `value`), or a line it could not parse. Writing the request again cannot store them.

Any other 400/413/422 refuses the request whole. Measured against InfluxDB 1.6 (the wording
is the same in 2.x, inside its JSON `message`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

TOO_LARGE = "too_large"
BEYOND_RETENTION = "beyond_retention"
TYPE_CONFLICT = "type_conflict"
UNPARSABLE = "unparsable"
REFUSED = "refused"  # the request refused whole, for a reason not above
CAUSES = (TOO_LARGE, BEYOND_RETENTION, TYPE_CONFLICT, UNPARSABLE, REFUSED)
_PARTIAL = re.compile(r"partial write:\s*(?P<reason>.*?)\s*dropped=(?P<dropped>\d+)", re.S)
_MEASUREMENT = re.compile(r'on measurement "(?P<name>(?:[^"\\]|\\.)+)"')


@dataclass(frozen=True, slots=True)
class Refusal:
    cause: str  # one of the constants above: a metric label
    detail: str  # InfluxDB's own words
    dropped: int | None = None  # partial write: points left out (the rest is stored)
    measurement: str | None = None  # a type conflict's measurement

    @property
    def partial(self) -> bool:
        return self.dropped is not None


def _message(body: str) -> str:
    """The error text out of InfluxDB's JSON answer (v1 `error`, v2 `message`), else the body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.strip()
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    return body.strip()


def read_refusal(status: int, body: str) -> Refusal:
    text = _message(body)
    if status == 413:
        return Refusal(TOO_LARGE, text or "Request Entity Too Large")
    m = _PARTIAL.search(text)
    if m is None:
        return Refusal(REFUSED, text)
    reason, dropped = m["reason"], int(m["dropped"])
    if reason.startswith("points beyond retention policy"):
        return Refusal(BEYOND_RETENTION, text, dropped)
    if reason.startswith("field type conflict"):
        name = _MEASUREMENT.search(reason)
        return Refusal(TYPE_CONFLICT, text, dropped, name["name"].replace('\\"', '"') if name else None)
    if reason.startswith("unable to parse"):
        # InfluxDB counts the lines it could not parse as dropped=0: the rest is stored
        return Refusal(UNPARSABLE, text, dropped)
    return Refusal(REFUSED, text, dropped)


def lines_of_measurement(lines: bytes, measurement: str) -> bytes:
    """The lines of one measurement (an unescaped name: ours are kind names)."""
    head = measurement.encode()
    return b"".join(ln for ln in lines.splitlines(keepends=True)
                    if ln.startswith(head) and ln[len(head):len(head) + 1] in (b",", b" "))


def lines_before(lines: bytes, oldest_ms: int) -> bytes:
    """The lines whose timestamp (ms, the last field) is older than `oldest_ms`."""
    out = []
    for ln in lines.splitlines(keepends=True):
        ts = ln.rstrip().rpartition(b" ")[2]
        if ts.isdigit() and int(ts) < oldest_ms:
            out.append(ln)
    return b"".join(out)
