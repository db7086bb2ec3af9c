"""Gateway batches read straight from their bytes into columns, compiled by numba.

The common gateway batch, `{"readings": [{"sensor": "...", "ts": <int>, "value": <number>},
...]}` or the bare list, of sensors registered inside the gateway's region, is read here
without a Python object per reading: the sensor id is looked up in an open-addressing table of
the registry's ids (its bytes compared, not only its hash), the time and value are parsed in
place. The compact form gateways send is matched byte for byte first; any other spacing or key
order takes a general JSON scan of the same shape.

This scanner only ever answers "these readings, exactly" or "not mine": anything it does not
recognise (escapes, a number it cannot convert exactly, an unknown or foreign sensor, a
missing, duplicate or extra key, an empty list, a time of more than 18 digits) returns -1 and
the message goes the way it always went (`ingest.decode.plain_batch`, then the general path
that names what is wrong). Values are converted only where the decimal converts in one
correctly rounded operation (at most 15 significant digits, a power of ten up to 22), so a
value read here is the same double msgspec would give.

Bounds: the general scan is compiled with numba's bounds check on every access, so a fault in
it raises IndexError and never reads past a payload; the processor then reads that batch the
usual way. The compact path and the helpers it shares (`_lit`, `_sensor`, `_ts`, `_number`,
`_compact`) run on every reading, and numba's check cost a quarter of the decode into columns
(bench/decode.py: 0.107 against 0.080 µs a reading): they are compiled without it
(`ews.compiled.guarded`), and each checks every index itself before using it, as its comment
says: a payload's bytes only below its end `n` (never past the joined buffer, whose length the
ends add up to), the registry's tables only at indices they were built to hold, the output
columns only below their length. The tests run the scanner with numba's check forced on
everywhere (`NUMBA_BOUNDSCHECK=1`) over thousands of mutated payloads, so a guard that is
missing shows there as an IndexError.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ews.compiled import guarded, kernel
from ingest.decode import SECONDS_BELOW, TS_MS_BELOW

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_POW10 = np.array([10.0**k for k in range(23)])
_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_COMPACT_HEAD = np.frombuffer(b'{"readings":[', np.uint8)
_K_SENSOR = np.frombuffer(b'{"sensor":"', np.uint8)
_K_TS = np.frombuffer(b',"ts":', np.uint8)
_K_VALUE = np.frombuffer(b',"value":', np.uint8)
_K_READINGS = np.frombuffer(b'"readings"', np.uint8)
_Q_SENSOR = np.frombuffer(b'"sensor"', np.uint8)
_Q_VALUE = np.frombuffer(b'"value"', np.uint8)


@kernel
def _ws(b, i, n):  # type: ignore[no-untyped-def]
    while i < n and (b[i] == 32 or b[i] == 10 or b[i] == 13 or b[i] == 9):
        i += 1
    return i


@guarded
def _lit(b, i, n, lit):  # type: ignore[no-untyped-def]
    # guarded: b[i + k] only once i + m <= n
    m = lit.shape[0]
    if i + m > n:
        return False
    for k in range(m):  # noqa: SIM110  # a generator is not compiled as tightly
        if b[i + k] != lit[k]:
            return False
    return True


@guarded
def _sensor(b, i, n, table, ids, offs):  # type: ignore[no-untyped-def]
    """(registry index, index after the closing quote) of the id string starting at `i`, just
    after its opening quote; index -1 when it holds an escape or is not registered."""
    # guarded: b below n; a table slot masked to the table's size; v in 1..len(ids), the
    # values the table was built with, so offs[v] exists; the id compared only up to its length
    s = i
    h = np.uint64(_FNV_OFFSET)
    while i < n:
        c = b[i]
        if c == 34 or c == 92 or c < 32:
            break
        h = (h ^ np.uint64(c)) * np.uint64(_FNV_PRIME)
        i += 1
    if i >= n or b[i] != 34:
        return -1, i
    mask = table.shape[0] - 1
    slot = np.int64(h & np.uint64(mask))
    ln = i - s
    while True:
        v = table[slot]
        if v == 0:
            return -1, i
        o = offs[v - 1]
        if offs[v] - o == ln:
            same = True
            for q in range(ln):
                if ids[o + q] != b[s + q]:
                    same = False
                    break
            if same:
                return v - 1, i + 1
        slot = (slot + 1) & mask


@guarded
def _ts(b, i, n):  # type: ignore[no-untyped-def]
    """(epoch ms, next index) of a positive JSON integer; ms -1 for anything else."""
    # guarded: b only below n
    if i >= n or not (49 <= b[i] <= 57):
        return -1, i
    t = 0
    d = 0
    while i < n and 48 <= b[i] <= 57:
        if d == 18:
            return -1, i
        t = t * 10 + (b[i] - 48)
        d += 1
        i += 1
    if (i < n and (b[i] == 46 or b[i] == 101 or b[i] == 69)) or t >= TS_MS_BELOW:
        return -1, i
    return (t if t >= SECONDS_BELOW else t * 1000), i


@guarded
def _number(b, i, n):  # type: ignore[no-untyped-def]
    """(value, next index, ok) of a JSON number that converts in one correctly rounded step."""
    # guarded: b only below n; _POW10 (23 entries) only at |e| <= 22
    neg = i < n and b[i] == 45
    if neg:
        i += 1
    if i >= n:
        return 0.0, i, False
    m = 0
    digits = 0
    if b[i] == 48:
        i += 1
    elif 49 <= b[i] <= 57:
        while i < n and 48 <= b[i] <= 57:
            m = m * 10 + (b[i] - 48)
            digits += 1
            i += 1
    else:
        return 0.0, i, False
    e = 0
    if i < n and b[i] == 46:
        i += 1
        if i >= n or not (48 <= b[i] <= 57):
            return 0.0, i, False
        while i < n and 48 <= b[i] <= 57:
            if m != 0 or b[i] != 48:  # a fraction's leading zeros are not significant digits
                m = m * 10 + (b[i] - 48)
                digits += 1
            e -= 1
            i += 1
    if digits > 15:  # past 2**53 (and an int64 past 18): msgspec's conversion decides
        return 0.0, i, False
    if i < n and (b[i] == 101 or b[i] == 69):
        i += 1
        eneg = i < n and b[i] == 45
        if i < n and (b[i] == 43 or b[i] == 45):
            i += 1
        if i >= n or not (48 <= b[i] <= 57):
            return 0.0, i, False
        x = 0
        while i < n and 48 <= b[i] <= 57:
            if x < 10_000:
                x = x * 10 + (b[i] - 48)
            i += 1
        e += -x if eneg else x
    if m == 0:
        e = 0
    elif e > 22 or e < -22:
        return 0.0, i, False
    f = float(m) * _POW10[e] if e >= 0 else float(m) / _POW10[-e]
    return (-f if neg else f), i, True


@guarded
def _compact(b, i, n, table, ids, offs, comm, code, div, out_s, out_t, out_v, at):  # type: ignore[no-untyped-def]
    """The batch as gateways send it, `{"readings":[{"sensor":"…","ts":…,"value":…},…]}` with
    no spaces, byte for byte; -1 for anything else."""
    # guarded: b only below n (after `i + 1 < n`, b[i + 1]); comm at a registry index; the
    # columns only below their length
    if not _lit(b, i, n, _COMPACT_HEAD):
        return -1
    i += _COMPACT_HEAD.shape[0]
    k = at
    while True:
        if not _lit(b, i, n, _K_SENSOR):
            return -1
        sidx, i = _sensor(b, i + _K_SENSOR.shape[0], n, table, ids, offs)
        if sidx < 0 or comm[sidx] < 0 or comm[sidx] // div != code or not _lit(b, i, n, _K_TS):
            return -1
        ts, i = _ts(b, i + _K_TS.shape[0], n)
        if ts < 0 or not _lit(b, i, n, _K_VALUE):
            return -1
        val, i, ok = _number(b, i + _K_VALUE.shape[0], n)
        if not ok or i + 1 >= n or b[i] != 125 or k >= out_s.shape[0]:
            return -1
        out_s[k] = sidx
        out_t[k] = ts
        out_v[k] = val
        k += 1
        c = b[i + 1]
        i += 2
        if c == 93:
            return k - at if i + 1 == n and b[i] == 125 else -1
        if c != 44:
            return -1


@kernel
def _key(b, i, n):  # type: ignore[no-untyped-def]
    """(1 sensor, 2 ts, 3 value or 0, index after the key's closing quote); b[i] is its opening quote."""
    if i + 4 <= n and b[i + 1] == 116 and b[i + 2] == 115 and b[i + 3] == 34:
        return 2, i + 4
    if _lit(b, i, n, _Q_VALUE):
        return 3, i + 7
    if _lit(b, i, n, _Q_SENSOR):
        return 1, i + 8
    return 0, i


@kernel
def _general(b, i, n, table, ids, offs, comm, code, div, out_s, out_t, out_v, at):  # type: ignore[no-untyped-def]
    """The same shape with any JSON spacing and key order; -1 for anything else."""
    i = _ws(b, i, n)
    wrapped = i < n and b[i] == 123
    if wrapped:
        i = _ws(b, i + 1, n)
        if not _lit(b, i, n, _K_READINGS):
            return -1
        i = _ws(b, i + _K_READINGS.shape[0], n)
        if i >= n or b[i] != 58:
            return -1
        i = _ws(b, i + 1, n)
    if i >= n or b[i] != 91:
        return -1
    k = at
    i = _ws(b, i + 1, n)
    while True:
        if i >= n or b[i] != 123:
            return -1
        i = _ws(b, i + 1, n)
        seen = 0
        sidx = -1
        ts = -1
        val = 0.0
        for f in range(3):
            if f > 0:
                if i >= n or b[i] != 44:
                    return -1
                i = _ws(b, i + 1, n)
            if i >= n or b[i] != 34:
                return -1
            key, i = _key(b, i, n)
            if key == 0 or (seen >> key) & 1:
                return -1
            seen |= 1 << key
            i = _ws(b, i, n)
            if i >= n or b[i] != 58:
                return -1
            i = _ws(b, i + 1, n)
            if key == 1:
                if i >= n or b[i] != 34:
                    return -1
                sidx, i = _sensor(b, i + 1, n, table, ids, offs)
                if sidx < 0 or comm[sidx] < 0 or comm[sidx] // div != code:
                    return -1
            elif key == 2:
                ts, i = _ts(b, i, n)
                if ts < 0:
                    return -1
            else:
                val, i, ok = _number(b, i, n)
                if not ok:
                    return -1
            i = _ws(b, i, n)
        if i >= n or b[i] != 125:
            return -1
        out_s[k] = sidx
        out_t[k] = ts
        out_v[k] = val
        k += 1
        i = _ws(b, i + 1, n)
        if i < n and b[i] == 44:
            i = _ws(b, i + 1, n)
            continue
        if i >= n or b[i] != 93:
            return -1
        break
    i = _ws(b, i + 1, n)
    if wrapped:
        if i >= n or b[i] != 125:
            return -1
        i = _ws(b, i + 1, n)
    return k - at if i == n else -1


@kernel
def _scan_all(b, ends, codes, divs, table, ids, offs, comm, out_s, out_t, out_v, counts):  # type: ignore[no-untyped-def]
    k = 0
    start = 0
    for m in range(ends.shape[0]):
        end = ends[m]
        c = _compact(b, start, end, table, ids, offs, comm, codes[m], divs[m], out_s, out_t, out_v, k)
        if c < 0:
            c = _general(b, start, end, table, ids, offs, comm, codes[m], divs[m], out_s, out_t, out_v, k)
        counts[m] = c
        if c > 0:
            k += c
        start = end
    return k


class GatewayScanner:
    """The registry's ids as a lookup table, and each sensor's community code as a number, so
    that "inside the gateway's region" is one integer division."""

    def __init__(self, ids: Sequence[str], communities: Sequence[str]):
        if len(ids) != len(communities):  # the compiled code reads both at the same index
            raise ValueError(f"{len(ids)} ids and {len(communities)} communities")
        raw = [s.encode() for s in ids]
        self._offs = np.zeros(len(raw) + 1, np.int64)
        self._offs[1:] = np.cumsum([len(r) for r in raw])
        self._ids = np.frombuffer(b"".join(raw), np.uint8)
        size = 8
        while size < 4 * len(raw):
            size *= 2
        self._table = np.zeros(size, np.int64)
        for idx, r in enumerate(raw):
            slot = _fnv(r) & (size - 1)
            while self._table[slot]:
                slot = (slot + 1) & (size - 1)
            self._table[slot] = idx + 1
        # -1 never lies inside a region: such a sensor's batches take the usual path
        self._comm = np.array([int(c) if _code(c, 12) else -1 for c in communities], np.int64)
        # compiled code is loaded (or compiled) at the first call: here, not on the first batch
        self.scan([b'[{"sensor":"","ts":1,"value":0}]'], [(0, 1)])

    @staticmethod
    def region(prefix: str) -> tuple[int, int] | None:
        """(code, divisor) such that community // divisor == code means "inside `prefix`"; None
        for a prefix that is not a 6, 9 or 12 digit code (its batches take the usual path)."""
        if not any(_code(prefix, k) for k in (6, 9, 12)):
            return None
        return int(prefix), 10 ** (12 - len(prefix))

    def scan(self, payloads: Sequence[bytes], regions: Sequence[tuple[int, int]]
             ) -> tuple[list[int], IntArray, IntArray, FloatArray]:
        """(readings of each payload, -1 where it is not the plain shape; sensor indices, epoch ms
        and values of all accepted payloads, in order)."""
        buf = np.frombuffer(b"".join(payloads), np.uint8)
        # the last end is the buffer's length: a payload's bytes lie below its end
        ends = np.cumsum(np.fromiter(map(len, payloads), np.int64, len(payloads)))
        cap = buf.shape[0] // 20 + 1  # a reading takes at least 28 bytes: {"sensor":"","ts":1,"value":0}
        out_s = np.empty(cap, np.int64)
        out_t = np.empty(cap, np.int64)
        out_v = np.empty(cap, np.float64)
        counts = np.empty(len(payloads), np.int64)
        codes = np.fromiter((r[0] for r in regions), np.int64, len(regions))
        divs = np.fromiter((r[1] for r in regions), np.int64, len(regions))
        k = _scan_all(buf, ends, codes, divs, self._table, self._ids, self._offs, self._comm,
                      out_s, out_t, out_v, counts)
        return counts.tolist(), out_s[:k], out_t[:k], out_v[:k]


def _code(s: str, digits: int) -> bool:
    return len(s) == digits and s.isascii() and s.isdigit()


def _fnv(raw: bytes) -> int:
    h = _FNV_OFFSET
    for c in raw:
        h = ((h ^ c) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h
