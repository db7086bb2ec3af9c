"""Gateway batches decoded and written as line protocol, alone: no broker, no database.

    .venv/bin/python -P bench/decode.py [--messages 200000] [--rounds 7]

The stream is bench/ingest.py's with 100 readings a message (the sample district's 305
sensors at their nominal intervals), in batches of 250 messages (about 1 MB of payload, what
the collector hands the processor in a backlog). Each round times, per reading, on the same
batches in this process:

- decode: `MessageProcessor.process` with the compiled gateway scanner (ingest/gatewayscan.py)
  against the same processor with the scanner turned off, i.e. msgspec's typed decode into
  Python lists (the baseline);
- line protocol: `LineBuilder.build` (orjson's number texts laid out by a compiled loop)
  against the three-part bytes join it replaced (the baseline, kept here).

Prints the best of the rounds and the ratios. (-P keeps bench/ off the import path.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # as -P does
sys.path.insert(0, str(_HERE.parent))  # the repository: the sibling scripts import as `bench.<name>`

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import orjson  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ews.config import RegistryConfig  # noqa: E402
from ingest.lineproto import LineBuilder  # noqa: E402
from ingest.process import MessageProcessor, Outcome  # noqa: E402

console = Console(width=110)


def joined_lines(prefixes: list[bytes], sensor: npt.NDArray[np.int64], ts: npt.NDArray[np.int64],
                 value: npt.NDArray[np.float64]) -> bytes:
    """The baseline: three parts a line in one bytes join, the separators put in by a replace."""
    def numbers(a: npt.NDArray[np.generic], end: bytes) -> list[bytes]:
        text = orjson.dumps(np.ascontiguousarray(a), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
        return (text + end).replace(b",", end + b",").split(b",")

    parts: list[bytes] = [b""] * (3 * int(sensor.shape[0]))
    parts[0::3] = list(map(prefixes.__getitem__, sensor.tolist()))
    parts[1::3] = numbers(value, b" ")
    parts[2::3] = numbers(ts, b"\n")
    return b"".join(parts)


def best(rounds: int, n: int, f: Callable[[], object]) -> float:
    out = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        f()
        out = min(out, (time.process_time() - t) / n * 1e6)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000, help="readings in the stream")
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    reg = RegistryConfig.sample().load()
    from bench.ingest import stream

    published, _ = stream(reg.sensors, a.messages, 100)
    msgs = [(t.encode(), p) for t, p in published]  # as paho hands them over
    batches = [msgs[i:i + 250] for i in range(0, len(msgs), 250)]
    now = int(time.time() * 1000)
    scanned, plain = MessageProcessor(reg.sensors, reg.regions), MessageProcessor(reg.sensors, reg.regions)
    plain._scan = lambda js, payloads, where: None  # type: ignore[method-assign]
    outcomes: list[Outcome] = []
    for proc in (scanned, plain):  # the first pass learns each gateway's topic: not timed
        outcomes = [proc.process(b, now) for b in batches]
    n = sum(len(o) for o in outcomes)
    for x, y in zip((scanned.process(b, now) for b in batches), outcomes, strict=True):
        assert x.sensor.tolist() == y.sensor.tolist() and x.value.tolist() == y.value.tolist()
    builder = LineBuilder(reg.sensors)
    for o in outcomes:
        assert builder.build(o.sensor, o.ts_ms, o.value) == joined_lines(builder.prefixes, o.sensor, o.ts_ms, o.value)

    rows = {
        "decode into columns": (
            best(a.rounds, n, lambda: [scanned.process(b, now) for b in batches]),
            best(a.rounds, n, lambda: [plain.process(b, now) for b in batches])),
        "line protocol": (
            best(a.rounds, n, lambda: [builder.build(o.sensor, o.ts_ms, o.value) for o in outcomes]),
            best(a.rounds, n, lambda: [joined_lines(builder.prefixes, o.sensor, o.ts_ms, o.value)
                                       for o in outcomes])),
    }
    t = Table(title=f"gateway batches, {n:,} readings in {len(batches)} batches, CPU µs a reading, best of {a.rounds}")
    for col in ("step", "compiled", "baseline", "compiled / baseline"):
        t.add_column(col, justify="right")
    for step, (new, old) in rows.items():
        t.add_row(step, f"{new:.3f}", f"{old:.3f}", f"{new / old:.2f}")
    new, old = (sum(r[k] for r in rows.values()) for k in (0, 1))
    t.add_row("both", f"{new:.3f}", f"{old:.3f}", f"{new / old:.2f}")
    console.print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
